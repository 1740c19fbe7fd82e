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
    """The prepared dataset resident on the training device, with batched augmentation there.

    Augmentation draws for a whole epoch come from the path's generator in four calls
    (`epoch_order`), so K paths trained at once and one at a time see identical batches.
    """

    def __init__(self, path: str | Path, device: torch.device, normalize: bool, augment: bool,
                 pad: int = 4):
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
        self.pad = pad
        # Padded once per job (uint8: 1.6x the images), so a crop is one gather per step.
        self.train_padded = (
            torch.nn.functional.pad(self.train_x, (pad, pad, pad, pad)) if augment else None
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32 on the device, per batch (the stored copy stays small)."""
        return images.float().sub_(self.mean).div_(self.std)  # in place: no extra temporaries

    def epoch_order(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(order (n,), crop/flip draws (3, n) or None) for one epoch, from `generator` alone."""
        n = len(self.train_y)
        order = torch.randperm(n, generator=generator, device=self.device)
        if not self.augment:
            return order, None
        return order, draw_crop_flip(n, generator, self.device, self.pad)

    def train_batch(self, index: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        """Float inputs for `index` (any shape) with their crop/flip draws (3, *index.shape)."""
        if draws is None:
            return self.to_float(self.train_x[index])
        flat = crop_flip(self.train_padded, index.reshape(-1), *draws.reshape(3, -1),
                         pad=self.pad)
        return self.to_float(flat.reshape(*index.shape, *flat.shape[1:]))


def draw_crop_flip(n: int, generator: torch.Generator, device: torch.device,
                   pad: int = 4) -> torch.Tensor:
    """(3, n) int64: vertical offset, horizontal offset and flip flag for n crops."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = (torch.rand(n, generator=generator, device=device) < 0.5).long()
    return torch.stack([dy, dx, flip])


def crop_flip(padded: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crops of images `index` of a padded (N, C, H+2p, W+2p) stack: one gather, no loop.

    index, dy, dx, flip: (m,) int64; returns (m, C, H, W) in the stack's dtype.
    """
    dev = padded.device
    n, channels, h_pad, w_pad = padded.shape
    h, w = h_pad - 2 * pad, w_pad - 2 * pad
    rows = dy[:, None] + torch.arange(h, device=dev)[None, :]  # (m, h)
    cols = torch.arange(w, device=dev)[None, :].expand(len(index), w)
    cols = torch.where(flip[:, None].bool(), w - 1 - cols, cols) + dx[:, None]  # (m, w)
    offsets = (rows[:, :, None] * w_pad + cols[:, None, :]).reshape(len(index), 1, h * w)
    # Two flat copies (whole images, then the crop's pixels) instead of a 4-index gather.
    images = padded.reshape(n, channels, h_pad * w_pad).index_select(0, index)
    return images.gather(2, offsets.expand(-1, channels, -1)).reshape(len(index), channels, h, w)


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, pad: int = 4
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip for a whole batch at once."""
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    index = torch.arange(len(images), device=images.device)
    draws = draw_crop_flip(len(images), generator, images.device, pad)
    return crop_flip(padded, index, *draws, pad=pad)
