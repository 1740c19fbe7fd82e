"""Datasets: read (digits, CIFAR-10 in either official layout, or download), subset, prepare.

`prepare` writes one compact checkpoint per run (uint8 images, labels, normalisation statistics)
that training jobs load in milliseconds and move to the device whole: no DataLoader, no workers.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrdecay import io

CIFAR10_BIN = "cifar-10-batches-bin"
CIFAR10_PY = "cifar-10-batches-py"
CIFAR10_URLS = {  # the official source, with the MD5s published beside it
    CIFAR10_BIN: (
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    CIFAR10_PY: (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
}
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
DIGITS_TRAIN_FRACTION = 0.6  # digits has no official split: a fixed, seed-independent 60/40 one
DIGITS_SPLIT_SEED = 12345


class DataError(RuntimeError):
    """Dataset files are missing or malformed; the message says what to put where."""


@dataclass
class Split:
    images: np.ndarray  # (n, C, H, W) or (n, features) uint8
    labels: np.ndarray  # (n,) int64


def load_digits() -> tuple[Split, Split]:
    """scikit-learn's 8x8 digits (pixel values 0..16), split per class with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels = sklearn_digits(return_X_y=True)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    train_idx, test_idx = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(DIGITS_TRAIN_FRACTION * len(members))
        train_idx.extend(members[:cut])
        test_idx.extend(members[cut:])
    as_split = lambda idx: Split(  # noqa: E731
        images[np.sort(idx)].astype(np.uint8), labels[np.sort(idx)].astype(np.int64)
    )
    return as_split(train_idx), as_split(test_idx)


def _read_cifar_bin(folder: Path, names: list[str]) -> Split:
    chunks = []
    for name in names:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR10_RECORD_BYTES:
            raise DataError(
                f"{folder / name} has {raw.size} bytes, not a multiple of {CIFAR10_RECORD_BYTES} "
                "(1 label byte + 3072 pixel bytes per image): the file is truncated or not "
                "CIFAR-10 binary. Replace it with the official file."
            )
        chunks.append(raw.reshape(-1, CIFAR10_RECORD_BYTES))
    records = np.concatenate(chunks)
    return Split(
        records[:, 1:].reshape(-1, 3, 32, 32).copy(), records[:, 0].astype(np.int64)
    )


def _read_cifar_py(folder: Path, names: list[str]) -> Split:
    images, labels = [], []
    for name in names:
        try:
            with open(folder / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise DataError(
                f"{folder / name} is not a CIFAR-10 python batch ({err}). "
                "Replace it with the official file."
            ) from err
    return Split(np.concatenate(images), np.concatenate(labels))


def load_cifar10(root: str | Path, download: bool = False) -> tuple[Split, Split]:
    """Read CIFAR-10 from `root` in the official binary or python layout, downloading if asked."""
    root = Path(root)
    layouts = {
        CIFAR10_BIN: (_read_cifar_bin, [f"data_batch_{i}.bin" for i in range(1, 6)],
                      ["test_batch.bin"]),
        CIFAR10_PY: (_read_cifar_py, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    }
    for layout, (reader, train_names, test_names) in layouts.items():
        folder = root / layout
        if all((folder / name).exists() for name in train_names + test_names):
            return reader(folder, train_names), reader(folder, test_names)
    if download:
        download_cifar10(root)
        return load_cifar10(root, download=False)
    raise DataError(
        f"CIFAR-10 not found under {root.resolve()}. Put the official binary version there as "
        f"{root}/{CIFAR10_BIN}/data_batch_1.bin ... data_batch_5.bin and test_batch.bin, or the "
        f"python version as {root}/{CIFAR10_PY}/data_batch_1 ... data_batch_5 and test_batch "
        "(from https://www.cs.toronto.edu/~kriz/cifar.html), or set data.download: true on a "
        "machine with internet access, or data.root to the folder that holds them."
    )


def download_cifar10(root: str | Path) -> None:
    """Fetch and extract the official binary archive, verifying its MD5."""
    from torchvision.datasets.utils import download_and_extract_archive

    url, md5 = CIFAR10_URLS[CIFAR10_BIN]
    try:
        download_and_extract_archive(url, download_root=str(root), md5=md5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataError(
            f"downloading CIFAR-10 from {url} failed ({err}). Without internet access, copy "
            f"the official files into {Path(root).resolve()}/{CIFAR10_BIN}/ and set "
            "data.download: false."
        ) from err


def balanced_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded class-balanced subset (all indices if per_class is None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise DataError(f"class {label} has {len(members)} images, fewer than {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def prepare(data_config: dict, seed: int, out_path: str | Path) -> None:
    """Load, subset and save the run's data as one verified checkpoint."""
    if data_config["name"] == "digits":
        train, test = load_digits()
    else:
        train, test = load_cifar10(data_config["root"], data_config["download"])
    train_idx = balanced_subset(train.labels, data_config["train_per_class"], seed)
    test_idx = balanced_subset(test.labels, data_config["test_per_class"], seed + 1)
    train_x = train.images[train_idx]
    # Per-channel statistics of the training subset (channel axis 1 for images, none for vectors).
    axes = (0, 2, 3) if train_x.ndim == 4 else (0,)
    as_float = train_x.astype(np.float64)
    mean = as_float.mean(axis=axes) if train_x.ndim == 4 else np.array([as_float.mean()])
    std = as_float.std(axis=axes) if train_x.ndim == 4 else np.array([as_float.std()])
    io.save_checkpoint(
        out_path,
        {
            "train_x": torch.from_numpy(train_x),
            "train_y": torch.from_numpy(train.labels[train_idx]),
            "test_x": torch.from_numpy(test.images[test_idx]),
            "test_y": torch.from_numpy(test.labels[test_idx]),
            "mean": torch.tensor(mean, dtype=torch.float32),
            "std": torch.tensor(std, dtype=torch.float32),
            "n_classes": int(train.labels.max()) + 1,
        },
        meta={"dataset": data_config["name"], "seed": seed, "n_train": len(train_idx),
              "n_test": len(test_idx)},
    )


class DeviceData:
    """The prepared dataset resident on the training device, with batched augmentation there."""

    def __init__(self, path: str | Path, device: torch.device, normalize: bool, augment: bool):
        blob = io.load_checkpoint(
            path, fix="delete it and rerun: snakemake --forcerun prepare_data", map_location=device
        )
        self.device = device
        self.train_x, self.train_y = blob["train_x"], blob["train_y"]  # uint8 stays uint8 here
        self.test_x, self.test_y = blob["test_x"], blob["test_y"]
        self.n_classes = int(blob["n_classes"])
        shape = (1, -1, 1, 1) if self.train_x.ndim == 4 else (1, -1)
        mean = blob["mean"].view(shape) if normalize else torch.zeros(1, device=device)
        std = blob["std"].view(shape) if normalize else torch.ones(1, device=device)
        self.mean, self.std = mean, std
        self.augment = augment

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32 on the device, per batch (the stored copy stays small)."""
        return (images.float() - self.mean) / self.std

    def train_batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = self.train_x[index]
        if self.augment:
            images = random_crop_flip(images, generator)
        return self.to_float(images)


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, pad: int = 4
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip for a whole batch at once.

    One gather with per-image offsets replaces a Python loop of torchvision transforms.
    """
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])  # (n, h)
    cols = torch.arange(w, device=dev)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (n, w)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=dev)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
