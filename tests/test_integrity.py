"""Corrupt or truncated files are reported with their path and the fix; NaN paths are named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lrdecay import config as lrconfig
from lrdecay import data, io, train
from tests.test_train import assert_same_outputs, engine_config, outputs, train_all


def truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.fixture
def trained_main(tmp_path: Path) -> dict:
    config = engine_config(tmp_path)
    train_all(config, groups=False)
    return config


@pytest.mark.parametrize("damage", [truncate, flip_byte], ids=["truncated", "corrupt"])
def test_bad_branch_state_is_reported_with_path_and_fix(trained_main: dict, damage) -> None:
    plan = lrconfig.Plan(trained_main)
    state = plan.branch_state(4)
    damage(state)
    with pytest.raises(io.CorruptFileError) as err:
        train.run_subpath_group(trained_main, str(plan.data_path), 0, str(plan.group_dir(0)),
                                "cpu")
    assert str(state) in str(err.value) and "snakemake --forcerun" in str(err.value)
    assert ("truncated" in str(err.value)) == (damage is truncate)


def test_bad_trajectory_is_reported_with_path_and_fix(trained_main: dict) -> None:
    plan = lrconfig.Plan(trained_main)
    train.run_subpath_group(trained_main, str(plan.data_path), 0, str(plan.group_dir(0)), "cpu")
    trajectory = plan.group_dir(0) / "branch-0002.npy"
    truncate(trajectory)
    with pytest.raises(io.CorruptFileError, match="truncated") as err:
        io.load_array(trajectory, fix="rerun its subpath group")
    assert str(trajectory) in str(err.value) and "Fix: rerun" in str(err.value)


def test_bad_dataset_is_reported_with_the_rule_to_rerun(trained_main: dict) -> None:
    plan = lrconfig.Plan(trained_main)
    flip_byte(plan.data_path)
    with pytest.raises(io.CorruptFileError, match="forcerun prepare_data") as err:
        data.DeviceData(plan.data_path, train.resolve_device("cpu"), True, False)
    assert str(plan.data_path) in str(err.value)


class Interrupt(Exception):
    """Stands in for a kill in the middle of a job."""


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
@pytest.mark.parametrize("damage", [truncate, flip_byte], ids=["truncated", "corrupt"])
def test_damaged_resume_state_restarts_the_job_with_a_warning(
    tmp_path: Path, monkeypatch, caplog, mode: str, damage
) -> None:
    engine = {"batched_subpaths": mode}
    reference = engine_config(tmp_path / "reference", engine=engine)
    train_all(reference)
    config = engine_config(tmp_path / "damaged", engine=engine)
    train_all(config, groups=False)

    calls = {"n": 0}
    original = train.io.save_checkpoint

    def interrupted(path, state, meta=None):  # save twice in the group's resume folder, then die
        original(path, state, meta)
        if ".resume" in str(path):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Interrupt

    monkeypatch.setattr(train.io, "save_checkpoint", interrupted)
    with pytest.raises(Interrupt):
        train_all(config)
    monkeypatch.setattr(train.io, "save_checkpoint", original)
    states = [p for p in lrconfig.Plan(config).resume_dir.rglob("*.pt")]
    snapshots = [p for p in lrconfig.Plan(config).resume_dir.rglob("snapshots.npy")]
    assert states and snapshots
    for path in states + snapshots:
        damage(path)
    with caplog.at_level(logging.WARNING):
        train_all(config)
    assert "starting" in caplog.text and "afresh" in caplog.text
    assert_same_outputs(outputs(config), outputs(reference))


def test_nan_loss_names_path_epoch_and_lr(tmp_path: Path) -> None:
    config = engine_config(tmp_path, optimizer={"main_lr": 1e6})
    with pytest.raises(train.DivergenceError) as err:
        train_all(config, groups=False)
    message = str(err.value)
    assert "main diverged at epoch 1 (lr 1000000.0)" in message
    assert "optimizer.main_lr" in message
    assert lrconfig.Plan(config).segment_dir(0).exists()  # what was computed before is kept
