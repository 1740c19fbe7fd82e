"""Datasets: read (digits, CIFAR-10 or CIFAR-100 in either official layout, or download),
subset, flip labels (label noise), prepare.

Adding a dataset is one entry in :data:`DATASETS` (a loader plus the facts the config checks and
the resource requests need); the config's ``data.name`` accepts exactly the registered names.

`prepare` writes one compact checkpoint per run (uint8 images, labels, normalisation statistics)
that training jobs load in milliseconds and move to the device whole: no DataLoader, no workers.
torch is imported on use, not with the module: the Snakefile reads this registry in every
Snakemake start (config validation, resource requests), where torch would cost seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lrdecay.core import io
from lrdecay.study import plan

if TYPE_CHECKING:
    import torch

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
CIFAR_PIXEL_BYTES = 3 * 32 * 32
# MD5 of each file of the official python layout (published with torchvision's CIFAR10 reader).
# For the binary layout only the archive's MD5 is published: download_cifar10 records the MD5 of
# each file it extracted from a verified archive in CIFAR10_VERIFIED, and that record is checked.
CIFAR10_PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_VERIFIED = "lrdecay-verified-md5.json"
# CIFAR-100: one training and one test file per layout; records of the binary layout hold a
# coarse and a fine label byte before the pixels; the python layout's b'fine_labels' are used.
# MD5s as published beside the files (and in torchvision's CIFAR100 reader).
CIFAR100_BIN = "cifar-100-binary"
CIFAR100_PY = "cifar-100-python"
CIFAR100_URLS = {
    CIFAR100_PY: (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
CIFAR100_PY_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}
# A deliberate subset in the official layout (fewer images per file and class), e.g. one written
# for a machine that cannot hold the whole set: set this to 1 to skip the count checks.
CIFAR10_SUBSET_ENV = "LRDECAY_CIFAR_SUBSET"
# Globals that the official python batches (and numpy's own pickles of uint8 arrays) refer to;
# an unpickler that resolves nothing else cannot be made to call code.
CIFAR10_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}
DIGITS_TRAIN_FRACTION = 0.6  # digits has no official split: a fixed, seed-independent 60/40 one
DIGITS_SPLIT_SEED = 12345
LABEL_NOISE_STREAM = 25  # the label flips' random stream, with data.seed (apart from the subsets')


log = logging.getLogger(__name__)


class DataError(RuntimeError):
    """Dataset files are missing or malformed; the message says what to put where."""


@dataclass(frozen=True)
class CifarSpec:
    """What the official CIFAR files hold, checked before use (tests build smaller sets): the
    class balance of each split (each of a split's files holds an equal share of it), the
    layouts' folders and file names, and where the labels are."""

    train_per_class: int = 5_000  # over the training files together
    test_per_class: int = 1_000
    n_classes: int = 10
    py_md5: dict[str, str] = field(default_factory=lambda: dict(CIFAR10_PY_MD5))
    name: str = "CIFAR-10"
    bin_folder: str = CIFAR10_BIN
    py_folder: str = CIFAR10_PY
    train_files: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: tuple[str, ...] = ("test_batch",)
    label_bytes: int = 1  # binary records: label bytes before the pixels; the last one is used
    label_key: bytes = b"labels"  # python batches
    download_layout: str = CIFAR10_BIN  # the archive download_cifar fetches (CIFAR10_URLS...)
    urls: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(CIFAR10_URLS))

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + CIFAR_PIXEL_BYTES

    def layouts(self) -> dict[str, tuple[list[str], list[str]]]:
        """Folder -> (training file names, test file names) of each official layout."""
        return {
            self.bin_folder: ([f"{n}.bin" for n in self.train_files],
                              [f"{n}.bin" for n in self.test_files]),
            self.py_folder: (list(self.train_files), list(self.test_files)),
        }


CIFAR10 = CifarSpec()
CIFAR100 = CifarSpec(
    train_per_class=500, test_per_class=100, n_classes=100, py_md5=dict(CIFAR100_PY_MD5),
    name="CIFAR-100", bin_folder=CIFAR100_BIN, py_folder=CIFAR100_PY, train_files=("train",),
    test_files=("test",), label_bytes=2, label_key=b"fine_labels", download_layout=CIFAR100_PY,
    urls=dict(CIFAR100_URLS),
)


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


def _read_cifar_bin(path: Path, spec: CifarSpec = CIFAR10) -> Split:
    raw = np.fromfile(path, dtype=np.uint8)
    size, labels = spec.record_bytes, spec.label_bytes
    if raw.size == 0 or raw.size % size:
        raise DataError(
            f"{path} has {raw.size} bytes, not a multiple of {size} ({labels} label "
            f"byte{'s' if labels > 1 else ''} + 3072 pixel bytes per image): the file is "
            f"truncated or not {spec.name} binary. Replace it with the official file."
        )
    records = raw.reshape(-1, size)
    return Split(records[:, labels:].reshape(-1, 3, 32, 32).copy(),
                 records[:, labels - 1].astype(np.int64))  # CIFAR-100: the fine label


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals of CIFAR10_PICKLE_GLOBALS: a planted payload is refused
    before anything runs (plain pickle.load would call whatever the file names)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in CIFAR10_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR batch never does; refusing to "
                "load it (a pickle can run code when loaded)"
            )
        if module == "numpy.core.multiarray":  # numpy 1's name of the same function
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_cifar_py(path: Path, spec: CifarSpec = CIFAR10) -> Split:
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
        pixels = batch[b"data"]
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
            raise ValueError(f"b'data' is {type(pixels).__name__}, not a uint8 array")
        labels = np.asarray(batch[spec.label_key], dtype=np.int64)
        images = pixels.reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"{path} is not a {spec.name} python batch ({err}). Replace it with the official "
            "file."
        ) from err
    if len(labels) != len(images):
        raise DataError(f"{path} has {len(images)} images but {len(labels)} labels. Replace it "
                        "with the official file.")
    return Split(images, labels)


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 (the published checksums are MD5)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _official_md5s(folder: Path, spec: CifarSpec) -> dict[str, str]:
    if folder.name == spec.py_folder:
        return spec.py_md5
    record = folder / CIFAR10_VERIFIED
    try:
        return dict(json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):  # no record (or a damaged one): nothing verified
        return {}


def check_checksums(folder: Path, names: list[str], spec: CifarSpec = CIFAR10) -> None:
    """Log a warning naming each file whose MD5 is not the official one (or is unknown)."""
    official = _official_md5s(folder, spec)
    unknown = [name for name in names if name not in official]
    if unknown:
        log.warning(
            "%s: %s cannot be compared with the official release (only the binary archive's "
            "MD5 is published; lrdecay verifies the files it downloads itself, with "
            "data.download: true and an empty data.root)", folder, ", ".join(unknown))
    for name in names:
        digest = _md5(folder / name) if name in official else None
        if digest is not None and digest != official[name]:
            log.warning(
                "%s: MD5 %s differs from the official %s; this is not the official %s "
                "file, and results may differ from the paper's", folder / name, digest,
                official[name], spec.name)


def check_labels(paths: list[Path], labels: list[np.ndarray], per_class: int,
                 spec: CifarSpec = CIFAR10) -> None:
    """Refuse files that cannot be the official ones (`labels`: one array per file of a split
    with `per_class` images of each class): wrong image counts (each file an equal share),
    labels outside 0..n_classes-1, or class counts other than the official balance."""
    subset = os.environ.get(CIFAR10_SUBSET_ENV) == "1"
    per_file = per_class * spec.n_classes // len(paths)
    for path, file_labels in zip(paths, labels, strict=True):
        count = len(file_labels)
        bad = np.unique(file_labels[(file_labels < 0) | (file_labels >= spec.n_classes)])
        if bad.size:
            raise DataError(
                f"{path} has labels {bad[:5].tolist()} outside 0..{spec.n_classes - 1}: it is "
                f"corrupt or not {spec.name}. Replace it with the official file."
            )
        if count != per_file and not subset:
            raise DataError(
                f"{path} holds {count} images; this official {spec.name} file holds exactly "
                f"{per_file}: it is truncated or not {spec.name}. Replace it with the "
                f"official file (or, for a deliberate subset, set {CIFAR10_SUBSET_ENV}=1)."
            )
    every = np.concatenate(labels)
    counts = np.bincount(every, minlength=spec.n_classes)
    if np.any(counts != per_class) and not subset:
        names = ", ".join(str(p) for p in paths)
        raise DataError(
            f"{names}: images per class are {counts.tolist()}, the official files have exactly "
            f"{per_class} of each class. Replace them with the official files (or, for a "
            f"deliberate subset, set {CIFAR10_SUBSET_ENV}=1)."
        )
    if subset:
        log.warning("%s=1: %s image counts are not checked (%d images, per class %s)",
                    CIFAR10_SUBSET_ENV, spec.name, len(every), counts.tolist())


def _read_split(folder: Path, names: list[str], per_class: int, spec: CifarSpec) -> Split:
    reader = _read_cifar_bin if folder.name == spec.bin_folder else _read_cifar_py
    parts = [reader(folder / name, spec) for name in names]
    check_labels([folder / n for n in names], [p.labels for p in parts], per_class, spec)
    return Split(np.concatenate([p.images for p in parts]),
                 np.concatenate([p.labels for p in parts]))


def load_cifar(root: str | Path, download: bool = False,
               spec: CifarSpec = CIFAR10) -> tuple[Split, Split]:
    """Read CIFAR-10 or CIFAR-100 (`spec`) from `root` in the official binary or python
    layout, downloading if asked.

    Every file is checked against `spec` (the official counts) before use, and a checksum that
    is not the official one is logged as a warning naming the file.
    """
    root = Path(root)
    layouts = spec.layouts()
    for layout, (train_names, test_names) in layouts.items():
        folder = root / layout
        if all((folder / name).exists() for name in train_names + test_names):
            check_checksums(folder, train_names + test_names, spec)
            return (_read_split(folder, train_names, spec.train_per_class, spec),
                    _read_split(folder, test_names, spec.test_per_class, spec))
    if download:
        download_cifar(root, spec)
        return load_cifar(root, download=False, spec=spec)
    (bin_train, bin_test), (py_train, py_test) = layouts.values()
    raise DataError(
        f"{spec.name} not found under {os.path.abspath(root)}. Put the official binary version "
        f"there as {root}/{spec.bin_folder}/{' '.join(bin_train + bin_test)}, or the python "
        f"version as {root}/{spec.py_folder}/{' '.join(py_train + py_test)} "
        "(from https://www.cs.toronto.edu/~kriz/cifar.html), or set data.download: true on a "
        "machine with internet access, or data.root to the folder that holds them."
    )


def load_cifar10(root: str | Path, download: bool = False,
                 spec: CifarSpec = CIFAR10) -> tuple[Split, Split]:
    """CIFAR-10 (`load_cifar` with its spec)."""
    return load_cifar(root, download, spec)


def load_cifar100(root: str | Path, download: bool = False,
                  spec: CifarSpec = CIFAR100) -> tuple[Split, Split]:
    """CIFAR-100 with its fine labels (`load_cifar` with its spec)."""
    return load_cifar(root, download, spec)


def download_cifar(root: str | Path, spec: CifarSpec = CIFAR10) -> None:
    """Fetch and extract the official archive of `spec.download_layout`, verifying its MD5;
    for the binary layout, whose files have no published MD5s, record those just extracted."""
    from torchvision.datasets.utils import download_and_extract_archive

    url, md5 = spec.urls[spec.download_layout]
    try:
        download_and_extract_archive(url, download_root=str(root), md5=md5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataError(
            f"downloading {spec.name} from {url} failed ({err}). Without internet access, copy "
            f"the official files into {os.path.abspath(root)}/{spec.download_layout}/ and set "
            "data.download: false."
        ) from err
    if spec.download_layout != spec.bin_folder:  # the python files' MD5s are published
        return
    folder = Path(root) / spec.bin_folder  # from an archive whose MD5 was verified
    train_names, test_names = spec.layouts()[spec.bin_folder]
    io.write_json(folder / CIFAR10_VERIFIED,
                  {name: _md5(folder / name) for name in train_names + test_names})


def download_cifar10(root: str | Path) -> None:
    """Fetch and extract the official CIFAR-10 binary archive, verifying its MD5."""
    download_cifar(root, CIFAR10)


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    load: (data config section, CIFAR spec or None for the official one) -> (train, test)
        uint8 Splits; labels 0..n_classes-1.
    input_shape: (C, H, W) of one image (digits' 8x8 images are stored flat, as 64 values, so
        only models that take any input, input_shape None, train on it).
    pool_per_class: images per class in the train and test pools (data.*_per_class may not
        exceed them; the config check says so before any job).
    augmentable: random crops and flips apply (padded images, not vectors).
    """

    load: Callable[[dict, CifarSpec | None], tuple[Split, Split]]
    input_shape: tuple[int, ...]
    n_classes: int
    pool_per_class: dict[str, int]
    augmentable: bool = False


# digits: per-class pools of the fixed 60/40 split (the smallest class, 174 images, gives 104/70).
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(lambda cfg, spec: load_digits(), (1, 8, 8), 10,
                          {"train": 104, "test": 70}),
    "cifar10": DatasetSpec(
        lambda cfg, spec: load_cifar(cfg["root"], cfg["download"], spec or CIFAR10),
        (3, 32, 32), 10, {"train": 5000, "test": 1000}, augmentable=True),
    "cifar100": DatasetSpec(
        lambda cfg, spec: load_cifar(cfg["root"], cfg["download"], spec or CIFAR100),
        (3, 32, 32), 100, {"train": 500, "test": 100}, augmentable=True),
}


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


def flip_counts(class_sizes: np.ndarray, n_flips: int, rng: np.random.Generator) -> np.ndarray:
    """Flips per class: `n_flips` shared in proportion to the class sizes, by largest remainder
    (floor of each share, then one more for the classes with the largest fractional parts, ties
    in a seeded random order), so equal classes get flips differing by at most one."""
    shares = n_flips * class_sizes / class_sizes.sum()
    counts = np.floor(shares).astype(np.int64)
    spare = n_flips - int(counts.sum())
    tie_break = rng.permutation(len(class_sizes))
    ranked = np.lexsort((tie_break, -(shares - counts)))  # largest fraction first, then random
    counts[ranked[:spare]] += 1
    return counts


def flip_labels(labels: np.ndarray, p: float, n_classes: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, sorted flipped indices): exactly round(p * n) labels flipped, class-balanced
    (`flip_counts`), members of a class chosen uniformly without replacement, each moved to one
    of the other n_classes - 1 classes uniformly. One seeded stream (`seed`, LABEL_NOISE_STREAM),
    apart from the subsets' draws, so the flips depend on data.seed and p alone."""
    rng = np.random.default_rng([seed, LABEL_NOISE_STREAM])
    classes = np.arange(n_classes)
    members = [np.flatnonzero(labels == c) for c in classes]
    counts = flip_counts(np.array([len(m) for m in members]), round(p * len(labels)), rng)
    flipped = np.sort(np.concatenate(
        [rng.choice(m, size=k, replace=False) for m, k in zip(members, counts, strict=True)]
    )).astype(np.int64)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, n_classes, size=len(flipped))) % n_classes
    return noisy, flipped


def flipped_path(data_path: str | Path) -> Path:
    """The flipped training indices, beside the prepared dataset (label noise only)."""
    return Path(data_path).with_name(plan.FLIPPED_NAME)


def prepare(data_config: dict, seed: int, out_path: str | Path,
            spec: CifarSpec | None = None) -> None:
    """Load, subset (and, with data.label_noise, flip training labels), and save the run's data
    as one verified checkpoint."""
    import torch  # on use (module docstring)

    data_config = plan.with_later_defaults("data", data_config)  # a rule's params leave them out
    dataset = DATASETS[data_config["name"]]
    train, test = dataset.load(data_config, spec)
    train_idx = balanced_subset(train.labels, data_config["train_per_class"], seed)
    test_idx = balanced_subset(test.labels, data_config["test_per_class"], seed + 1)
    train_x, train_y = train.images[train_idx], train.labels[train_idx]
    noise = {}
    if data_config["label_noise"] > 0:  # at 0 the checkpoint is byte for byte the old one
        noisy, flipped = flip_labels(train_y, data_config["label_noise"], dataset.n_classes,
                                     data_config["seed"])
        noise = {"train_y_clean": torch.from_numpy(train_y), "flipped": torch.from_numpy(flipped)}
        io.save_array(flipped_path(out_path), flipped, {
            "layout": "indices into the prepared training set (train_x) whose label was flipped",
            "label_noise": data_config["label_noise"], "seed": data_config["seed"],
            "n_train": len(train_y)})
        train_y = noisy
    # Per-channel statistics of the training subset (channel axis 1 for images, none for vectors).
    axes = (0, 2, 3) if train_x.ndim == 4 else (0,)
    as_float = train_x.astype(np.float64)
    mean = as_float.mean(axis=axes) if train_x.ndim == 4 else np.array([as_float.mean()])
    std = as_float.std(axis=axes) if train_x.ndim == 4 else np.array([as_float.std()])
    io.save_checkpoint(
        out_path,
        {
            "train_x": torch.from_numpy(train_x),
            "train_y": torch.from_numpy(train_y),
            "test_x": torch.from_numpy(test.images[test_idx]),
            "test_y": torch.from_numpy(test.labels[test_idx]),
            "mean": torch.tensor(mean, dtype=torch.float32),
            "std": torch.tensor(std, dtype=torch.float32),
            "n_classes": dataset.n_classes,
            **noise,
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
        import torch  # on use (module docstring)

        blob = io.load_checkpoint(
            path, fix="delete it and rerun: snakemake --forcerun prepare_data", map_location=device
        )
        self.device = device
        self.train_x, self.train_y = blob["train_x"], blob["train_y"]  # uint8 stays uint8 here
        self.test_x, self.test_y = blob["test_x"], blob["test_y"]
        self.n_classes = int(blob["n_classes"])
        # With label noise: (images, labels) of the clean and of the flipped training examples,
        # gathered once, for their separate losses (training labels are the noisy ones).
        self.noise_splits: tuple[tuple, tuple] | None = None
        if "flipped" in blob:
            flipped = torch.zeros(len(self.train_y), dtype=torch.bool, device=device)
            flipped[blob["flipped"]] = True
            self.noise_splits = ((self.train_x[~flipped], self.train_y[~flipped]),
                                 (self.train_x[flipped], self.train_y[flipped]))
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
        import torch  # on use (module docstring)

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
    import torch  # on use (module docstring)

    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = (torch.rand(n, generator=generator, device=device) < 0.5).long()
    return torch.stack([dy, dx, flip])


def crop_flip(padded: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crops of images `index` of a padded (N, C, H+2p, W+2p) stack: one gather, no loop.

    index, dy, dx, flip: (m,) int64; returns (m, C, H, W) in the stack's dtype.
    """
    import torch  # on use (module docstring)

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


def subset(n_train: int, samples: int, seed: int) -> torch.Tensor:
    """Sorted indices of a fixed seeded training subset (all images if `samples` >= n_train):
    the sharpness loss's and the landscape's batch norm statistics' (lrdecay.analysis.landscape)."""
    import torch

    if samples >= n_train:
        return torch.arange(n_train)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return order[:samples].sort().values
