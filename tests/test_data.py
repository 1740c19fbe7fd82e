"""Data: CIFAR-10 readers on small files in both official layouts, subsets, preparation."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lrdecay.training import data
from tests.conftest import CIFAR_SMALL, Payload, write_cifar_bin, write_cifar_py


@pytest.mark.parametrize("writer", [write_cifar_bin, write_cifar_py])
def test_cifar_layouts_read_exactly(tmp_path: Path, writer) -> None:
    images, labels = writer(tmp_path)
    train, test = data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
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
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)


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


def test_download_records_verified_checksums(tmp_path: Path, monkeypatch, caplog) -> None:
    """Files extracted from the MD5-verified archive are recorded, so their reads are quiet."""
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "download_and_extract_archive",
                        lambda url, download_root, md5: write_cifar_bin(Path(download_root)))
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar10(tmp_path, download=True, spec=CIFAR_SMALL)
    record = json.loads((tmp_path / data.CIFAR10_BIN / data.CIFAR10_VERIFIED).read_text())
    assert sorted(record) == [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    assert caplog.text == ""


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
    data.prepare(cfg, seed=0, out_path=out, spec=CIFAR_SMALL)
    loaded = data.DeviceData(out, torch.device("cpu"), normalize=True, augment=True)
    assert loaded.train_x.dtype == torch.uint8 and loaded.train_x.shape == (50, 3, 32, 32)
    assert torch.bincount(loaded.train_y).tolist() == [5] * 10
    floats = loaded.to_float(loaded.train_x)
    assert torch.allclose(floats.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(floats.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_crop_flip_is_the_drawn_window() -> None:
    """The training path's augmentation (draw_crop_flip, then crop_flip on the padded stack, as
    DeviceData.train_batch does): each output is exactly the drawn window, flipped if drawn."""
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.uint8).reshape(4, 3, 8, 8)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    index = torch.tensor([2, 0, 3, 2, 1, 1])
    draws = data.draw_crop_flip(len(index), torch.Generator().manual_seed(0), images.device, pad=2)
    assert draws[:2].min() >= 0 and draws[:2].max() <= 4 and set(draws[2].tolist()) == {0, 1}
    out = data.crop_flip(padded, index, *draws, pad=2)
    assert out.shape == (6, 3, 8, 8)
    for k, (i, dy, dx, flip) in enumerate(zip(index, *draws, strict=True)):
        window = padded[i, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[k], window.flip(-1) if flip else window)
    again = data.draw_crop_flip(len(index), torch.Generator().manual_seed(0), images.device, pad=2)
    assert torch.equal(draws, again)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("call", ["os.system", "builtins.exec"])
def test_python_batch_never_runs_code(tmp_path: Path, call: str, protocol: int) -> None:
    """A batch whose pickle carries a __reduce__ payload is refused before the payload runs."""
    write_cifar_py(tmp_path)
    marker = tmp_path / "payload-ran"
    payload = {"os.system": Payload(os.system, f"touch {marker}"),
               "builtins.exec": Payload(exec, f"open({str(marker)!r}, 'w').close()")}[call]
    victim = tmp_path / data.CIFAR10_PY / "data_batch_1"
    with open(victim, "wb") as handle:  # the payload first, the real batch beside it
        pickle.dump({b"payload": payload, b"data": np.zeros((20, 3072), np.uint8),
                     b"labels": list(range(10)) * 2}, handle, protocol=protocol)
    try:
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
        message = "read without an error"
    except data.DataError as err:
        message = str(err)
    assert not marker.exists(), "the planted payload ran"
    assert f"{victim} is not a CIFAR-10 python batch" in message and "refusing" in message



def test_python_batch_with_numpy1_names_is_read(tmp_path: Path) -> None:
    """The official batches name numpy 1's numpy.core.multiarray._reconstruct; numpy 2 reads
    them under its new name, and the restricted unpickler must allow both."""
    images, _ = write_cifar_py(tmp_path)
    victim = tmp_path / data.CIFAR10_PY / "data_batch_1"
    blob = victim.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in blob  # protocol 2: a text GLOBAL opcode
    victim.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    train, _ = data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    np.testing.assert_array_equal(train.images[:20], images[:20])

@pytest.mark.parametrize("writer", [write_cifar_bin, write_cifar_py])
def test_corrupt_batches_are_refused(tmp_path: Path, writer) -> None:
    """Short files, labels outside 0..9 and a wrong class balance each stop the read."""
    images, labels = writer(tmp_path)
    folder = tmp_path / (data.CIFAR10_BIN if writer is write_cifar_bin else data.CIFAR10_PY)
    suffix = ".bin" if writer is write_cifar_bin else ""

    def rewrite(name: str, keep: slice, new_labels: np.ndarray | None = None) -> None:
        index = {f"data_batch_{k}{suffix}": k - 1 for k in range(1, 6)}[name]
        part = slice(index * 20, (index + 1) * 20)
        pix, lab = images[part].reshape(20, -1)[keep], labels[part][keep]
        lab = lab if new_labels is None else new_labels
        if suffix:
            np.concatenate([lab[:, None].astype(np.uint8), pix], axis=1).tofile(folder / name)
        else:
            with open(folder / name, "wb") as handle:
                pickle.dump({b"data": pix, b"labels": lab.tolist()}, handle, protocol=2)

    rewrite(f"data_batch_2{suffix}", slice(0, 10))  # whole records, but only half of them
    with pytest.raises(data.DataError, match=rf"data_batch_2{suffix} holds 10 images.*exactly 20"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    rewrite(f"data_batch_2{suffix}", slice(None), np.arange(20) % 10 + 200)  # labels 200..209
    with pytest.raises(data.DataError, match=rf"data_batch_2{suffix} has labels \[200, 201"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    rewrite(f"data_batch_2{suffix}", slice(None), np.zeros(20, dtype=np.int64))  # all class 0
    with pytest.raises(data.DataError, match=r"images per class are \[28, 8, 8, .*exactly 10"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)


def test_subset_folder_is_read_when_declared(tmp_path: Path, monkeypatch, caplog) -> None:
    """A deliberate subset (fewer images per file) loads only with LRDECAY_CIFAR_SUBSET=1."""
    write_cifar_bin(tmp_path, n=10)
    with pytest.raises(data.DataError, match="holds 10 images"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    monkeypatch.setenv(data.CIFAR10_SUBSET_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        train, _ = data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    assert len(train.labels) == 50 and "counts are not checked" in caplog.text


def test_official_counts_are_the_published_ones() -> None:
    """The default spec is the official release: 10,000 images per file, 5,000 per class over
    the five training files, 1,000 per class in the test file."""
    rng = np.random.default_rng(0)
    files = np.split(rng.permutation(np.repeat(np.arange(10), 5000)), 5)
    paths = [Path(f"data_batch_{k}.bin") for k in range(1, 6)]
    data.check_labels(paths, files, data.CIFAR10.train_per_class)
    with pytest.raises(data.DataError, match="data_batch_5.bin holds 9999 images"):
        data.check_labels(paths, [*files[:4], files[4][:-1]], data.CIFAR10.train_per_class)
    test = np.repeat(np.arange(10), 1000)
    data.check_labels([Path("test_batch.bin")], [test], data.CIFAR10.test_per_class)
    assert data.CIFAR10.py_md5["test_batch"] == "40351d587109b95175f43aff81a1287e"


def test_checksum_warnings_name_the_file(tmp_path: Path, caplog) -> None:
    """Python layout: compared with the official MD5s. Binary layout: with the record that a
    verified download leaves, else reported as not comparable."""
    write_cifar_py(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)  # official MD5s: every file differs
    for name in ["data_batch_1", "data_batch_5", "test_batch"]:
        assert f"{data.CIFAR10_PY}/{name}: MD5" in caplog.text
    assert "differs from the official c99cafc152244af753f735de768cd75f" in caplog.text
    folder = tmp_path / data.CIFAR10_PY
    own = data.CifarSpec(10, 2, py_md5={p.name: data._md5(p) for p in folder.iterdir()})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar10(tmp_path, spec=own)
    assert caplog.text == ""

    write_cifar_bin(tmp_path)
    (folder / "data_batch_1").unlink()  # the binary layout is read now
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    assert "data_batch_1.bin, data_batch_2.bin" in caplog.text
    assert "cannot be compared" in caplog.text
    binary = tmp_path / data.CIFAR10_BIN
    record = {p.name: data._md5(p) for p in binary.glob("*.bin")}
    record["data_batch_3.bin"] = "0" * 32
    (binary / data.CIFAR10_VERIFIED).write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrdecay.training.data"):
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    assert "data_batch_3.bin: MD5" in caplog.text and "data_batch_1.bin" not in caplog.text
