"""The run loop's invariant: the paths trained together share one lr schedule (one lr per group)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrdecay.config import validate as lrconfig
from lrdecay.training import subpaths, train
from lrdecay.training.engine import PathSpec
from tests.conftest import engine_config, train_all


def run_of(tmp_path: Path, specs: list[PathSpec], **kwargs: object) -> train.PathsRun:
    """A run of `specs` from epoch 2 (no trainer: the check comes before any work)."""
    n = len(specs)
    return train.PathsRun(None, specs, kwargs.pop("starts", [2] * n), 2,
                          [tmp_path / s.name for s in specs], [None] * n,
                          tmp_path / "resume.pt", **kwargs)


def test_subpaths_of_one_lr_make_a_run(tmp_path):
    run = run_of(tmp_path, [PathSpec("branch-0002", 2, 0.01), PathSpec("branch-0004", 4, 0.01)],
                 starts=[2, 4])
    assert [s.lr for s in run.specs] == [0.01, 0.01]
    assert not any(tmp_path.iterdir())  # built, nothing written yet


def test_paths_of_two_lrs_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"one lr per group.*'branch-0004': 0\.02"):
        run_of(tmp_path, [PathSpec("branch-0002", 2, 0.01), PathSpec("branch-0004", 4, 0.02)])


def test_the_main_path_beside_a_subpath_is_refused(tmp_path):
    # one lr, but the main path's schedule counts from epoch 0 and a subpath's from its branch
    with pytest.raises(ValueError, match="include the main path"):
        run_of(tmp_path, [PathSpec("main", None, 0.01), PathSpec("branch-0002", 2, 0.01)])


def test_a_run_needs_one_start_per_path(tmp_path):
    with pytest.raises(ValueError, match="1 starts"):
        run_of(tmp_path, [PathSpec("branch-0002", 2, 0.01), PathSpec("branch-0004", 4, 0.01)],
               starts=[2])


def test_a_group_handed_two_lrs_fails_before_training(tmp_path, monkeypatch):
    """Planted: a subpath group whose paths get another lr each (a branch_spec bug) is refused
    before it trains anything, not trained at the first path's lr."""
    config = engine_config(tmp_path, engine={"batched_subpaths": "vmap"})
    train_all(config, groups=False)
    plan = lrconfig.Plan(config)
    honest = subpaths.branch_spec
    monkeypatch.setattr(subpaths, "branch_spec", lambda cfg, b: PathSpec(
        honest(cfg, b).name, b, cfg["optimizer"]["subpath_lr"] * (1 + b)))
    assert len(plan.subpath_groups[0]) > 1
    with pytest.raises(ValueError, match="one lr per group"):
        subpaths.run_subpath_group(config, str(plan.data_path), 0, str(plan.group_dir(0)), "cpu")
    assert not plan.group_dir(0).exists()
    assert not list(plan.group_work(0).rglob("*.npy"))  # no snapshot file was even opened
