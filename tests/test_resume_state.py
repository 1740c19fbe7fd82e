"""Resume states: keyed by the training hash (issue 13.2), committed with their record (13.5)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from tests.conftest import (
    assert_same_bytes,
    assert_same_outputs,
    engine_config,
    outputs,
    poison_branch_state,
    state_bytes,
    train_all,
)


class Interrupt(Exception):
    """Stands in for a kill at one instant of a job."""


def interrupt_at(monkeypatch, moment: str, path_part: str, nth: int = 1) -> None:
    """Raise Interrupt at the `nth` commit (rename) of a file whose path contains `path_part`."""
    seen = {"n": 0}

    def hook(when: str, path: Path) -> None:
        if when == moment and path_part in str(path):
            seen["n"] += 1
            if seen["n"] == nth:
                raise Interrupt(f"{moment} {path}")

    monkeypatch.setattr(io, "commit_hook", hook)


def subpath_lrs(config: dict) -> set[float]:
    frame = pd.read_csv(lrconfig.Plan(config).group_dir(0) / "metrics.csv")
    return set(frame["lr"])


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_branch_done_under_another_lr_is_set_aside_not_reused(
    tmp_path: Path, monkeypatch, caplog, mode: str
) -> None:
    """Interrupt while branch 4 trains with branch 2 done, rerun with another subpath_lr."""
    engine = {"batched_subpaths": mode}
    reference = engine_config(tmp_path / "reference", optimizer={"subpath_lr": 0.02},
                              engine=engine)
    train_all(reference)
    first = engine_config(tmp_path / "run", engine=engine)  # subpath_lr 0.01
    # sequential: the 2nd commit of branch 4's state (branch 2 is finished by then);
    # vmap: the group's state after two epochs (all three branches part-trained).
    interrupt_at(monkeypatch, "after", "branch-0004/resume.pt" if mode == "sequential"
                 else "subpath_group-000", nth=2)
    with pytest.raises(Interrupt):
        train_all(first)
    monkeypatch.setattr(io, "commit_hook", None)
    resume = lrconfig.Plan(first).resume_dir
    if mode == "sequential":
        assert list(resume.rglob("branch-0002/metrics.csv"))  # branch 2 finished at lr 0.01

    rerun = engine_config(tmp_path / "run", optimizer={"subpath_lr": 0.02}, engine=engine)
    with caplog.at_level(logging.INFO):
        train_all(rerun)
    assert "already finished" not in caplog.text and "resumed" not in caplog.text
    assert "holds state of another config" in caplog.text and "set-aside" in caplog.text
    assert subpath_lrs(rerun) == {0.02}
    assert_same_outputs(outputs(rerun), outputs(reference))
    assert list((resume / "set-aside").rglob("*.npy"))  # set aside, not deleted


def test_lowering_the_lr_after_a_divergence_retrains_every_branch(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """The divergence message's advice (lower the lr) must not mix two lrs in one group."""
    engine = {"batched_subpaths": "vmap"}
    reference = engine_config(tmp_path / "reference", optimizer={"subpath_lr": 0.005},
                              engine=engine)
    train_all(reference)
    config = engine_config(tmp_path / "run", engine=engine)  # subpath_lr 0.01
    train_all(config, groups=False)
    state = lrconfig.Plan(config).branch_state(4)
    kept = state.read_bytes(), state.with_name(state.name + ".json").read_bytes()
    poison_branch_state(config, 4)  # branch 4 diverges at once; branches 2 and 6 finish at lr 0.01
    with pytest.raises(Exception, match="branch-0004 diverged"):
        train_all(config)
    state.write_bytes(kept[0])
    state.with_name(state.name + ".json").write_bytes(kept[1])

    lower = engine_config(tmp_path / "run", optimizer={"subpath_lr": 0.005}, engine=engine)
    with caplog.at_level(logging.INFO):
        train_all(lower)
    assert "already finished" not in caplog.text and "set-aside" in caplog.text
    assert subpath_lrs(lower) == {0.005}
    assert_same_outputs(outputs(lower), outputs(reference))


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("path_part", ["main_segment-0006", "subpath_group-000"])
def test_a_kill_at_the_commit_of_a_state_keeps_a_valid_state(
    tmp_path: Path, monkeypatch, caplog, moment: str, path_part: str
) -> None:
    """Killed right before or right after a resume state is renamed into place (where the old
    state.pt and its separate record used to disagree), the rerun resumes, never restarts."""
    engine = {"batched_subpaths": "vmap"}
    reference = engine_config(tmp_path / "reference", engine=engine)
    train_all(reference)
    config = engine_config(tmp_path / "run", engine=engine)
    reads = lrconfig.MAIN_PATH if path_part.startswith("main") else lrconfig.SUBPATHS
    interrupt_at(monkeypatch, moment, f"{path_part}/{reads.hash(config)}/resume.pt", nth=2)
    with pytest.raises(Interrupt):
        train_all(config)
    monkeypatch.setattr(io, "commit_hook", None)
    with caplog.at_level(logging.INFO):
        train_all(config)
    assert "resumed at epoch" in caplog.text
    assert "afresh" not in caplog.text and "ignoring" not in caplog.text
    assert_same_outputs(outputs(config), outputs(reference))
    assert_same_bytes(state_bytes(config), state_bytes(reference))  # state.pt as DVC sees it


def test_a_partial_main_path_of_another_config_is_set_aside(tmp_path: Path, monkeypatch,
                                                           caplog) -> None:
    reference = engine_config(tmp_path / "reference", optimizer={"main_lr": 0.05})
    train_all(reference, groups=False)
    first = engine_config(tmp_path / "run")  # main_lr 0.1
    interrupt_at(monkeypatch, "after", "main_segment-0003/", nth=1)  # inside the first segment
    with pytest.raises(Interrupt):
        train_all(first, groups=False)
    monkeypatch.setattr(io, "commit_hook", None)
    rerun = engine_config(tmp_path / "run", optimizer={"main_lr": 0.05})
    shutil.rmtree(lrconfig.Plan(rerun).seed_dir() / "main")  # as Snakemake reruns on new params
    with caplog.at_level(logging.INFO):
        train_all(rerun, groups=False)
    assert "resumed" not in caplog.text and "holds state of another config" in caplog.text
    assert_same_outputs(outputs(rerun), outputs(reference))
