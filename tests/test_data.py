"""Data: CIFAR-10 readers on small files in both official layouts, subsets, preparation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lrdecay import data


def _write_batches(
    root: Path, layout: str, n: int, seed: int, write
) -> tuple[np.ndarray, np.ndarray]:
    """Random images in six batch files (five train, one test); `write(path, images, labels)`
    writes one file in the layout's format."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6 * n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(6 * n) % 10
    folder = root / layout
    folder.mkdir(parents=True)
    suffix = ".bin" if layout == data.CIFAR10_BIN else ""
    names = [f"data_batch_{k}{suffix}" for k in range(1, 6)] + [f"test_batch{suffix}"]
    for i, name in enumerate(names):
        part = slice(i * n, (i + 1) * n)
        write(folder / name, images[part].reshape(n, -1), labels[part])
    return images, labels


def write_cifar_bin(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write the official binary layout: per record 1 label byte then 3072 pixel bytes."""

    def write(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
        np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1).tofile(path)

    return _write_batches(root, data.CIFAR10_BIN, n, seed=1, write=write)


def write_cifar_py(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write the official python layout: pickled dicts with b'data' (n, 3072) and b'labels'."""

    def write(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
        with open(path, "wb") as handle:
            pickle.dump({b"data": pixels, b"labels": labels.tolist()}, handle)

    return _write_batches(root, data.CIFAR10_PY, n, seed=2, write=write)


@pytest.mark.parametrize("writer", [write_cifar_bin, write_cifar_py])
def test_cifar_layouts_read_exactly(tmp_path: Path, writer) -> None:
    images, labels = writer(tmp_path)
    train, test = data.load_cifar10(tmp_path)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, images[:100])
    np.testing.assert_array_equal(train.labels, labels[:100])
    np.testing.assert_array_equal(test.images, images[100:])
    np.testing.assert_array_equal(test.labels, labels[100:])


def test_truncated_binary_is_reported(tmp_path: Path) -> None:
    write_cifar_bin(tmp_path)
    victim = tmp_path / data.CIFAR10_BIN / "data_batch_3.bin"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="data_batch_3.bin.*truncated"):
        data.load_cifar10(tmp_path)


def test_missing_cifar_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(data.DataError) as info:
        data.load_cifar10(tmp_path / "nowhere")
    message = str(info.value)
    assert "cifar-10-batches-bin/data_batch_1.bin" in message
    assert "cifar-10-batches-py" in message and "data.download" in message


def test_offline_download_fails_clearly(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(data.DataError, match="downloading CIFAR-10 .* failed"):
        data.load_cifar10(tmp_path, download=True)


def test_balanced_subset_is_seeded_and_balanced() -> None:
    labels = np.repeat(np.arange(10), 50)
    first = data.balanced_subset(labels, 7, seed=3)
    assert np.all(np.bincount(labels[first]) == 7)
    np.testing.assert_array_equal(first, data.balanced_subset(labels, 7, seed=3))
    assert not np.array_equal(first, data.balanced_subset(labels, 7, seed=4))
    assert len(data.balanced_subset(labels, None, seed=0)) == 500


def test_digits_split_is_fixed_and_disjoint() -> None:
    train, test = data.load_digits()
    train2, _ = data.load_digits()
    np.testing.assert_array_equal(train.images, train2.images)
    assert len(train.labels) + len(test.labels) == 1797
    assert np.bincount(train.labels).min() >= 104 and np.bincount(test.labels).min() >= 70


def test_prepare_cifar_and_device_data(tmp_path: Path) -> None:
    write_cifar_bin(tmp_path)
    cfg = {"name": "cifar10", "root": str(tmp_path), "download": False,
           "train_per_class": 5, "test_per_class": 1}
    out = tmp_path / "prepared.pt"
    data.prepare(cfg, seed=0, out_path=out)
    loaded = data.DeviceData(out, torch.device("cpu"), normalize=True, augment=True)
    assert loaded.train_x.dtype == torch.uint8 and loaded.train_x.shape == (50, 3, 32, 32)
    assert torch.bincount(loaded.train_y).tolist() == [5] * 10
    floats = loaded.to_float(loaded.train_x)
    assert torch.allclose(floats.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(floats.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_random_crop_flip_is_a_shifted_window() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    out = data.random_crop_flip(images, generator, pad=2)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):  # every output must equal some crop (possibly flipped) of the padded image
        found = any(
            torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(-1))
            for dy in range(5) for dx in range(5)
            for crop in [padded[i, :, dy : dy + 8, dx : dx + 8]]
        )
        assert found
    again = data.random_crop_flip(images, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)
