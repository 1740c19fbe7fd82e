"""Corrupt or truncated files are reported with their path and the fix; NaN paths are named."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.training import data, subpaths, train, trajectories
from tests.conftest import assert_same_outputs, engine_config, outputs, train_all


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
def test_bad_branch_state_is_reported_with_a_fix_that_works(trained_main: dict, damage) -> None:
    plan = lrconfig.Plan(trained_main)
    state = plan.branch_state(4)  # inside the segment folder main/segment-0006
    damage(state)
    with pytest.raises(io.CorruptFileError) as err:
        subpaths.run_subpath_group(trained_main, str(plan.data_path), 0,
                                   str(plan.group_dir(0)), "cpu")
    message = str(err.value)
    assert str(state) in message and ("truncated" in message) == (damage is truncate)
    # The hint names the job output to delete (the file alone would not make Snakemake rerun
    # the job, since its output is the folder) and following it repairs the run.
    assert f"delete the folder {state.parent} " in message
    assert f"snakemake --force {state.parent}" in message
    shutil.rmtree(state.parent)
    train_all(trained_main)
    io.load_checkpoint(state, fix="")
    assert len(pd.read_csv(plan.group_dir(0) / "metrics.csv")) == 3 * 4


@pytest.mark.parametrize("record", ["{}", "[1, 2]", '{"bytes": "x", "sha256": 3}', "\u00ff"])
def test_a_sidecar_that_is_no_record_is_named(tmp_path: Path, record: str) -> None:
    path = tmp_path / "a.pt"
    io.save_checkpoint(path, {"x": torch.zeros(2)})
    (tmp_path / "a.pt.json").write_text(record)
    with pytest.raises(io.CorruptFileError) as err:
        io.load_checkpoint(path, fix="rerun it")
    assert str(tmp_path / "a.pt.json") in str(err.value) and "Fix: rerun it" in str(err.value)


def test_result_files_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.save_checkpoint(tmp_path / "b.pt", {"x": torch.zeros(1)})
        with io.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "c").write_text("x")
        os.umask(0o002)
        io.write_text(tmp_path / "d.txt", "x")
    finally:
        os.umask(previous)
    mode = {name: stat.S_IMODE((tmp_path / name).stat().st_mode)
            for name in ("a.txt", "b.pt", "b.pt.json", "folder", "d.txt")}
    assert mode == {"a.txt": 0o640, "b.pt": 0o640, "b.pt.json": 0o640, "folder": 0o750,
                    "d.txt": 0o664}


def test_a_group_metrics_file_cut_to_its_header_is_caught_at_gathering(
    trained_main: dict, tmp_path: Path
) -> None:
    config = trained_main
    plan = lrconfig.Plan(config)
    train_all(config)
    csvs = [plan.segment_dir(e) / "metrics.csv" for e in [0, *plan.segment_ends]]
    csvs += [plan.group_dir(g) / "metrics.csv" for g in range(len(plan.subpath_groups))]
    trajectories.gather_metrics(csvs, tmp_path / "all.csv", config=config)  # complete: passes
    cut = plan.group_dir(0) / "metrics.csv"
    # resealed (a valid record): the plan check, not the checksum, must catch it
    io.save_csv(cut, pd.read_csv(cut).iloc[:0])
    with pytest.raises(trajectories.IncompleteResultsError) as err:
        trajectories.gather_metrics(csvs, tmp_path / "cut.csv", config=config)
    message = str(err.value)
    for branch in (2, 4, 6):
        assert f"subpath branching at {branch}: 4 epoch(s) missing ({branch}-{branch + 3})" \
            in message
    assert "main path" not in message and str(plan.group_dir(0)) in message
    assert not (tmp_path / "cut.csv").exists()

    segment = plan.segment_dir(3) / "metrics.csv"  # one epoch gone, one repeated
    frame = pd.read_csv(segment)
    io.save_csv(segment, pd.concat([frame.iloc[[0, 0]], frame.iloc[2:]]))
    cut.unlink()
    with pytest.raises(trajectories.IncompleteResultsError,
                       match=r"main path: 1 epoch\(s\) missing \(2\).*main path: 1 epoch\(s\) "
                             r"repeated \(1\)"):
        trajectories.gather_metrics(csvs[:-1], tmp_path / "cut.csv", config=config)


def test_bad_trajectory_is_reported_with_path_and_fix(trained_main: dict) -> None:
    plan = lrconfig.Plan(trained_main)
    subpaths.run_subpath_group(trained_main, str(plan.data_path), 0, str(plan.group_dir(0)),
                               "cpu")
    trajectory = plan.group_dir(0) / "branch-0002.npy"
    truncate(trajectory)
    with pytest.raises(io.CorruptFileError, match="truncated") as err:
        io.load_array(trajectory, fix="rerun its subpath group")
    assert str(trajectory) in str(err.value) and "Fix: rerun" in str(err.value)


def test_bad_dataset_is_reported_with_the_rule_to_rerun(trained_main: dict) -> None:
    plan = lrconfig.Plan(trained_main)
    flip_byte(plan.data_path)
    with pytest.raises(io.CorruptFileError, match="forcerun prepare_data") as err:
        data.DeviceData(plan.data_path, torch.device("cpu"), True, False)
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
    original = io.save_state

    def interrupted(path, state, meta=None):  # save twice in the group's resume folder, then die
        original(path, state, meta)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt

    monkeypatch.setattr(io, "save_state", interrupted)
    with pytest.raises(Interrupt):
        train_all(config)
    monkeypatch.setattr(io, "save_state", original)
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
