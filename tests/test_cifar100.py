"""CIFAR-100: both official layouts on small generated files (fine labels), the same restricted
unpickler and count/label checks as CIFAR-10, download with MD5, and the config's class check."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.core.basics import ConfigError
from lrdecay.training import data, models
from tests.conftest import TINY, Payload

# The official checks at a small size: 2 training and 1 test image of each of the 100 classes.
SMALL = dataclasses.replace(data.CIFAR100, train_per_class=2, test_per_class=1)


def _records(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels (n, 3072) uint8, fine labels, coarse labels): classes interleaved, coarse
    labels fine // 5 (so a reader taking the coarse byte or key gets other labels)."""
    rng = np.random.default_rng(seed)
    fine = np.tile(np.arange(100), n_per_class)
    return rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8), fine, fine // 5


def write_bin(path: Path, pixels: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> None:
    """The binary layout: per record the coarse label byte, the fine label byte, 3072 pixels."""
    labels = np.stack([coarse, fine], axis=1).astype(np.uint8)
    np.concatenate([labels, pixels], axis=1).tofile(path)


def write_py(path: Path, pixels: np.ndarray, fine: np.ndarray, coarse: np.ndarray,
             **extra: object) -> None:
    """The python layout: a pickled dict as the official files hold (protocol 2)."""
    batch = {b"filenames": [b"img_%d.png" % i for i in range(len(fine))], b"batch_label": b"x",
             b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(), b"data": pixels,
             **extra}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


LAYOUTS = {data.CIFAR100_BIN: (write_bin, ".bin"), data.CIFAR100_PY: (write_py, "")}


def write_cifar100(root: Path, layout: str) -> dict[str, tuple]:
    writer, suffix = LAYOUTS[layout]
    (root / layout).mkdir(parents=True)
    files = {"train": _records(2, seed=0), "test": _records(1, seed=1)}
    for name, records in files.items():
        writer(root / layout / f"{name}{suffix}", *records)
    return files


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_both_layouts_read_exactly_with_fine_labels(tmp_path: Path, layout: str) -> None:
    files = write_cifar100(tmp_path, layout)
    train, test = data.load_cifar100(tmp_path, spec=SMALL)
    for split, (pixels, fine, _) in zip((train, test), files.values(), strict=True):
        np.testing.assert_array_equal(split.images, pixels.reshape(-1, 3, 32, 32))
        np.testing.assert_array_equal(split.labels, fine)  # fine, not coarse
    assert train.images.shape == (200, 3, 32, 32) and test.labels.max() == 99


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_corrupt_files_are_refused(tmp_path: Path, layout: str) -> None:
    """Wrong counts, labels >= 100 and a wrong class balance each stop the read."""
    files = write_cifar100(tmp_path, layout)
    writer, suffix = LAYOUTS[layout]
    victim = tmp_path / layout / f"train{suffix}"
    pixels, fine, coarse = files["train"]
    writer(victim, pixels[:-1], fine[:-1], coarse[:-1])
    with pytest.raises(data.DataError, match=rf"train{suffix} holds 199 images.*exactly 200"):
        data.load_cifar100(tmp_path, spec=SMALL)
    writer(victim, pixels, np.where(fine == 7, 100, fine), coarse)
    with pytest.raises(data.DataError, match=rf"train{suffix} has labels \[100\] outside 0..99"):
        data.load_cifar100(tmp_path, spec=SMALL)
    writer(victim, pixels, np.where(fine == 7, 8, fine), coarse)  # class 7 missing, 8 doubled
    with pytest.raises(data.DataError, match=r"images per class are \[2, 2, 2, 2, 2, 2, 2, 0, 4"):
        data.load_cifar100(tmp_path, spec=SMALL)


def test_official_counts_and_checksums() -> None:
    """The default spec is the official release (50,000 training images in one file, 500 per
    class; 10,000 test, 100 per class) with torchvision's published MD5s."""
    from torchvision.datasets import CIFAR100

    assert data.CIFAR100_PY_MD5 == dict(CIFAR100.train_list + CIFAR100.test_list)
    assert data.CIFAR100_URLS[data.CIFAR100_PY] == (CIFAR100.url, CIFAR100.tgz_md5)
    rng = np.random.default_rng(0)
    train = rng.permutation(np.repeat(np.arange(100), 500))
    data.check_labels([Path("train")], [train], data.CIFAR100.train_per_class, data.CIFAR100)
    with pytest.raises(data.DataError, match="train holds 49999 images"):
        data.check_labels([Path("train")], [train[:-1]], 500, data.CIFAR100)
    data.check_labels([Path("test")], [np.repeat(np.arange(100), 100)], 100, data.CIFAR100)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_pickle_payload_never_runs(tmp_path: Path, protocol: int) -> None:
    files = write_cifar100(tmp_path, data.CIFAR100_PY)
    marker = tmp_path / "payload-ran"
    victim = tmp_path / data.CIFAR100_PY / "train"
    pixels, fine, coarse = files["train"]
    with open(victim, "wb") as handle:
        pickle.dump({b"payload": Payload(os.system, f"touch {marker}"), b"data": pixels,
                     b"fine_labels": fine.tolist()}, handle, protocol=protocol)
    with pytest.raises(data.DataError) as info:
        data.load_cifar100(tmp_path, spec=SMALL)
    assert not marker.exists(), "the planted payload ran"
    assert f"{victim} is not a CIFAR-100 python batch" in str(info.value)
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)


def test_checksums_compared_with_the_official_ones(tmp_path: Path, caplog) -> None:
    write_cifar100(tmp_path, data.CIFAR100_PY)
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar100(tmp_path, spec=SMALL)
    assert "cifar-100-python/train: MD5" in caplog.text
    assert "differs from the official 16019d7e3df5f24257cddd939b257f8d" in caplog.text


def test_download_fetches_the_python_archive_with_its_md5(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url: str, download_root: str, md5: str) -> None:
        calls.append((url, md5))
        write_cifar100(Path(download_root), data.CIFAR100_PY)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    train, _ = data.load_cifar100(tmp_path, download=True, spec=SMALL)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "eb9058c3a382ffc7106e4002c42a8d85")]
    assert len(train.labels) == 200


def test_prepare_cifar100_subset(tmp_path: Path) -> None:
    write_cifar100(tmp_path, data.CIFAR100_BIN)
    cfg = {"name": "cifar100", "root": str(tmp_path), "download": False,
           "train_per_class": 1, "test_per_class": None, "seed": 0, "label_noise": 0.1}
    out = tmp_path / "prepared.pt"
    data.prepare(cfg, seed=0, out_path=out, spec=SMALL)
    loaded = data.DeviceData(out, torch.device("cpu"), normalize=True, augment=True)
    assert loaded.n_classes == 100 and torch.bincount(loaded.train_y).max() <= 2
    assert len(loaded.noise_splits[1][1]) == 10  # round(0.1 * 100) flipped
    assert torch.bincount(loaded.test_y).tolist() == [1] * 100


def test_cifar100_config_and_a_ten_way_head(tmp_path: Path, monkeypatch) -> None:
    """vgg_small follows the dataset's 100 classes; a model with a fixed 10-way output is
    refused before any job, naming the key and the fix."""
    sections = {"output_dir": str(tmp_path), "data": {"name": "cifar100", "train_per_class": 5},
                "model": {"name": "vgg_small"}}
    config = lrconfig.load(TINY, overrides=sections)
    assert lrconfig.DATASETS[config["data"]["name"]].n_classes == 100
    ten_way = dataclasses.replace(models.MODELS["vgg_small"], n_outputs=10)
    monkeypatch.setitem(models.MODELS, "vgg_small_head10", ten_way)
    with pytest.raises(ConfigError) as info:
        lrconfig.load(TINY, overrides={**sections, "model": {"name": "vgg_small_head10"}})
    message = str(info.value)
    assert "model.name = 'vgg_small_head10': has 10 outputs" in message
    assert "data.name = 'cifar100' has 100 classes" in message
    assert "use data.name: digits or cifar10" in message
    with pytest.raises(ConfigError, match="data.label_noise = 0.0001: flips"):
        lrconfig.load(TINY, overrides={**sections, "data": {**sections["data"],
                                                            "label_noise": 0.0001}})
