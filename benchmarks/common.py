"""Shared pieces of the benchmarks: the authors'-style baseline, the engine's setup, timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.study import plan
from lrdecay.training import data, models
from lrdecay.training.engine import Trainer, loss_function

REPO = Path(__file__).resolve().parents[1]
VGG11_TRAIN_GFLOP = 0.92  # per 32x32 image, forward + backward (the figure)


def engine_config(model: str, batch_size: int, augment: bool, dropout: float, loss: str,
                  momentum: float, weight_decay: float, eval_batch: int, train_metric: str,
                  **engine: object) -> dict:
    """A validated config for benchmarking, as one seed's job sees it (the engine's training hash
    reads `seed`; paths unused: the data is built in memory)."""
    return plan.for_seed(lrconfig.validate({
        "output_dir": "/tmp/lrdecay-bench", "device": "cpu",
        "data": {"name": "cifar10", "augment": augment},
        "model": {"name": model, "dropout": dropout}, "loss": loss,
        "optimizer": {"batch_size": batch_size, "momentum": momentum,
                      "weight_decay": weight_decay},
        "metrics": {"eval_batch_size": eval_batch, "train_metric": train_metric},
        "engine": dict(engine),
    }), seed=0)


def write_dataset(path: Path, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                  test_y: np.ndarray) -> Path:
    """Save arrays in lrdecay.training.data.prepare's format, so DeviceData loads them as in a
    run."""
    as_float = train_x.astype(np.float64)
    io.save_checkpoint(path, {
        "train_x": torch.from_numpy(train_x), "train_y": torch.from_numpy(train_y),
        "test_x": torch.from_numpy(test_x), "test_y": torch.from_numpy(test_y),
        "mean": torch.tensor(as_float.mean(axis=(0, 2, 3)), dtype=torch.float32),
        "std": torch.tensor(as_float.std(axis=(0, 2, 3)), dtype=torch.float32),
        "n_classes": 10,
    })
    return path


def cifar_subset(root: Path, per_class: int, test_per_class: int, seed: int = 0):
    train, test = data.load_cifar10(root)
    i = data.balanced_subset(train.labels, per_class, seed)
    j = data.balanced_subset(test.labels, test_per_class, seed + 1)
    return train.images[i], train.labels[i], test.images[j], test.labels[j]


def synthetic(n_train: int, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
            np.arange(n_train, dtype=np.int64) % 10,
            rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
            np.arange(n_test, dtype=np.int64) % 10)


class ImageSet(Dataset):
    """The authors' pipeline: PIL images through torchvision transforms, one image at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: list, std: list):
        from PIL import Image
        from torchvision import transforms

        self.images = [Image.fromarray(img.transpose(1, 2, 0)) for img in images]
        self.labels = labels
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def baseline_loader(train_x, train_y, batch_size: int, workers: int) -> DataLoader:
    mean = (train_x.reshape(len(train_x), 3, -1).mean(axis=(0, 2)) / 255).tolist()
    std = (train_x.reshape(len(train_x), 3, -1).std(axis=(0, 2)) / 255).tolist()
    return DataLoader(ImageSet(train_x, train_y, mean, std), batch_size=batch_size,
                      shuffle=True, num_workers=workers)


def baseline_data_epoch(loader: DataLoader, device: torch.device) -> None:
    for images, labels in loader:
        images.to(device), labels.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline_train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         loader: DataLoader, device: torch.device, loss: str,
                         max_steps: int | None = None) -> int:
    """One epoch as research code does it: loss.item() every step (a host sync per step)."""
    loss_fn = loss_function(loss)
    model.train()
    steps, total = 0, 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        out = model(images)
        value = loss_fn(out, labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        total += value.item()
        steps += 1
        if max_steps and steps >= max_steps:
            break
    return steps


def baseline_model(name: str, dropout: float, device: torch.device, momentum: float,
                   weight_decay: float, lr: float = 0.01):
    torch.manual_seed(0)
    model = models.build({"name": name, "hidden": [], "dropout": dropout}, (3, 32, 32), 10)
    model = model.to(device)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                  weight_decay=weight_decay)


def engine_data_epoch(trainer: Trainer, generator: torch.Generator) -> None:
    """The engine's data work for one epoch: permutation, crops and flips, uint8 -> float."""
    device_data = trainer.data
    order, draws = device_data.epoch_order(generator)
    for start in range(0, len(order), trainer.batch_size):
        device_data.train_batch(order[start : start + trainer.batch_size],
                                None if draws is None else
                                draws[:, start : start + trainer.batch_size])
    sync(trainer.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    began = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - began


def median(values: list[float]) -> float:
    return statistics.median(values)
