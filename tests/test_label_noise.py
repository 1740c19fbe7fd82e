"""Label noise (data.label_noise): exact, class-balanced, seeded by data.seed, training labels
only, and its metrics columns; refused outside [0, 1) before any job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.core.basics import ConfigError
from lrdecay.training import data
from lrdecay.training.engine import METRIC_COLUMNS, NOISE_COLUMNS
from tests.conftest import load_tiny, train_all


def prepared(tmp_path: Path, name: str, **data_keys: object) -> tuple[dict, Path]:
    """The tiny preset's dataset with `data_keys` set, prepared under tmp_path/name."""
    config = load_tiny(tmp_path / name, data=data_keys)
    path = lrconfig.Plan(config).data_path
    data.prepare(config["data"], config["data"]["seed"], path)
    return config, path


@pytest.mark.parametrize("p", [0.05, 0.2, 0.37, 0.9])
def test_flips_exact_count_class_balanced_other_class(p: float) -> None:
    labels = np.repeat(np.arange(10), 43)  # 430: round(p * n) is not a multiple of 10
    noisy, flipped = data.flip_labels(labels, p, 10, seed=3)
    n_flips = round(p * len(labels))
    assert len(flipped) == n_flips == len(np.unique(flipped))
    assert np.array_equal(np.flatnonzero(noisy != labels), flipped)  # each flip changes a label
    per_class = np.bincount(labels[flipped], minlength=10)
    assert per_class.max() - per_class.min() <= 1 and per_class.sum() == n_flips
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_flips_follow_unequal_class_sizes() -> None:
    """Classes of unequal size (data.train_per_class: null) lose flips in proportion."""
    sizes = np.array([10, 30, 60])
    labels = np.repeat(np.arange(3), sizes)
    _, flipped = data.flip_labels(labels, 0.5, 3, seed=0)
    assert np.bincount(labels[flipped], minlength=3).tolist() == [5, 15, 30]


def test_flip_targets_are_uniform_over_the_other_classes() -> None:
    """New labels: every other class about equally often (chi-square-like bound, 10 classes)."""
    labels = np.repeat(np.arange(10), 2000)
    noisy, flipped = data.flip_labels(labels, 0.5, 10, seed=1)
    offsets = (noisy[flipped] - labels[flipped]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0
    expected = len(flipped) / 9  # 1111 each; binomial sd about 31, so 5 sd is 156
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))


def test_flips_seeded_by_data_seed_only() -> None:
    labels = np.repeat(np.arange(10), 20)
    a = data.flip_labels(labels, 0.2, 10, seed=0)
    b = data.flip_labels(labels, 0.2, 10, seed=0)
    c = data.flip_labels(labels, 0.2, 10, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_prepare_flips_train_labels_only_and_saves_indices(tmp_path: Path) -> None:
    """Same images and test labels as without noise; the flipped indices beside the dataset."""
    _, clean_path = prepared(tmp_path, "clean")
    config, noisy_path = prepared(tmp_path, "noisy", label_noise=0.2)
    clean = io.load_checkpoint(clean_path, fix="")
    noisy = io.load_checkpoint(noisy_path, fix="")
    for key in ("train_x", "test_x", "test_y", "mean", "std"):
        assert torch.equal(clean[key], noisy[key]), key
    flipped, meta = io.load_array(lrconfig.Plan(config).flipped_path, fix="", mmap=False)
    assert meta["label_noise"] == 0.2
    n = len(clean["train_y"])
    assert len(flipped) == round(0.2 * n) == 40
    assert torch.equal(noisy["flipped"], torch.from_numpy(flipped))
    changed = torch.nonzero(noisy["train_y"] != clean["train_y"]).flatten()
    assert torch.equal(changed, torch.from_numpy(flipped))
    assert torch.equal(noisy["train_y_clean"], clean["train_y"])
    assert not (clean_path.parent / "flipped.npy").exists()  # p = 0: no extra file


def test_flips_identical_across_training_seeds(tmp_path: Path) -> None:
    """One dataset per run, seeded by data.seed: every training seed trains on the same flips,
    and a run with other training seeds prepares the same file byte for byte."""
    _, a = prepared(tmp_path, "a", label_noise=0.2)
    config = load_tiny(tmp_path / "b", data={"label_noise": 0.2}, seeds=[5, 6])
    b = lrconfig.Plan(config).data_path
    data.prepare(config["data"], config["data"]["seed"], b)
    assert a.read_bytes() == b.read_bytes()
    _, c = prepared(tmp_path, "c", label_noise=0.2, seed=1)
    assert not torch.equal(io.load_checkpoint(a, fix="")["flipped"],
                           io.load_checkpoint(c, fix="")["flipped"])


def test_noise_metrics_split_clean_and_flipped(tmp_path: Path) -> None:
    """metrics.csv gains the clean/flipped columns with noise only; their weighted mean is the
    full-pass train loss (a planted 'clean split includes the flipped' bug breaks it)."""
    config = load_tiny(tmp_path, data={"label_noise": 0.25},
                       schedule={"main_epochs": 4, "segment_epochs": 4, "first_branch_epoch": 2,
                                 "branch_interval": 2, "last_branch_epoch": 4},
                       engine={"batched_subpaths": "vmap"})
    train_all(config)
    plan = lrconfig.Plan(config)
    frame = pd.read_csv(plan.segment_dir(4) / "metrics.csv")
    assert list(frame.columns[: len(METRIC_COLUMNS) + 4]) == METRIC_COLUMNS + NOISE_COLUMNS
    n = 200
    flips = round(0.25 * n)
    mixed = ((n - flips) * frame["train_loss_clean"] + flips * frame["train_loss_flipped"]) / n
    np.testing.assert_allclose(mixed, frame["train_loss"], rtol=1e-5)  # float32 sums
    assert (frame["train_loss_flipped"] > frame["train_loss_clean"]).all()
    sub = pd.read_csv(plan.group_dir(0) / "metrics.csv")  # K = 2 at once (lrdecay.training.stacked)
    mixed = ((n - flips) * sub["train_loss_clean"] + flips * sub["train_loss_flipped"]) / n
    np.testing.assert_allclose(mixed, sub["train_loss"], rtol=1e-5)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_label_noise_outside_unit_interval_refused(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ConfigError) as info:
        load_tiny(tmp_path, data={"label_noise": bad})
    assert "data.label_noise" in str(info.value) and "[0, 1)" in str(info.value)
