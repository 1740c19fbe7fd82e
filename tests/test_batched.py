"""K subpaths trained at once (vmap) give the parameters they get trained one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.training import stacked, train
from tests.conftest import engine_config, outputs, poison_branch_state, train_all


def relative_error(a: bytes, b: bytes) -> float:
    x, y = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
    return float(np.abs(x - y).max() / np.abs(y).max())


def assert_close_outputs(a: dict, b: dict) -> None:
    """Snapshots within 1e-5 of the largest |parameter|, metrics within 1e-4 (vmap's batched
    GEMMs reduce in another order than one model's)."""
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(".npy"):
            assert relative_error(a[key], b[key]) < 1e-5, key
        else:
            pd.testing.assert_frame_equal(a[key], b[key], rtol=1e-4, atol=1e-5, obj=key)


@pytest.mark.parametrize("make", [engine_config], ids=["mlp"])
def test_three_subpaths_batched_equal_sequential(tmp_path: Path, make) -> None:
    """K = 3, a few epochs: same snapshots (rel. error < 1e-5) and metrics as one at a time.
    (vgg_small on each device: tests/test_devices.py.)"""
    sequential = make(tmp_path / "seq", engine={"batched_subpaths": "sequential"})
    vmapped = make(tmp_path / "vmap", engine={"batched_subpaths": "vmap"})
    assert [len(g) for g in lrconfig.Plan(vmapped).subpath_groups][0] == 3
    train_all(sequential)
    train_all(vmapped)
    assert_close_outputs(outputs(vmapped), outputs(sequential))


def test_one_subpath_falls_back_to_the_plain_path(tmp_path: Path, monkeypatch) -> None:
    """K = 1 never reaches the batched engine, and each branch gets the numbers it gets in a group
    of three trained at once: a path's numbers depend on its branch, not on its job."""
    single = engine_config(tmp_path / "single", engine={"batched_subpaths": "vmap"},
                           schedule={"subpaths_per_job": 1})
    grouped = engine_config(tmp_path / "grouped", engine={"batched_subpaths": "vmap"})
    train_all(grouped)

    def refuse(*args, **kwargs):
        raise AssertionError("K = 1 must not go through the batched engine")

    monkeypatch.setattr(stacked, "StackedStepper", refuse)
    train_all(single)
    assert [len(g) for g in lrconfig.Plan(single).subpath_groups] == [1, 1, 1]
    a, b = by_branch(outputs(single)), by_branch(outputs(grouped))
    assert {"branch-0002.npy", "branch-0004.npy", "branch-0006.npy", "subpaths.csv"} < a.keys()
    assert_close_outputs(a, b)


def by_branch(found: dict) -> dict:
    """A run's outputs with subpath snapshots keyed by branch and all subpath metrics in one
    table, whichever jobs trained them."""
    out = {k: v for k, v in found.items() if k.startswith("main/")}
    out.update({Path(k).name: v for k, v in found.items()
                if k.startswith("subpaths/") and k.endswith(".npy")})
    tables = [v for k, v in found.items() if k.startswith("subpaths/") and k.endswith(".csv")]
    out["subpaths.csv"] = (pd.concat(tables).sort_values(["branch_epoch", "epoch"])
                           .reset_index(drop=True))
    return out


@pytest.mark.parametrize("mode", ["vmap", "sequential"])
def test_diverging_subpath_spares_the_others_and_is_the_only_one_retrained(
    tmp_path: Path, mode: str, monkeypatch
) -> None:
    config = engine_config(tmp_path, engine={"batched_subpaths": mode})
    train_all(config, groups=False)
    poisoned = poison_branch_state(config, 4)
    with pytest.raises(train.DivergenceError) as err:
        train_all(config)
    message = str(err.value)
    assert "branch-0004 diverged at epoch 5 (lr 0.01)" in message
    assert "branch-0002" not in message and "branch-0006" not in message
    group_work = (lrconfig.Plan(config).resume_dir / "subpath_group-000"
                  / lrconfig.SUBPATHS.hash(config))
    finished = {b: (group_work / f"branch-{b:04d}" / "metrics.csv") for b in (2, 6)}
    assert all(p.exists() for p in finished.values())
    stamps = {b: p.stat().st_mtime_ns for b, p in finished.items()}

    # Repair the branch state (as rerunning its segment would) and rerun: only branch 4 trains.
    state = io.load_checkpoint(poisoned, fix="")
    state["model"] = {k: torch.nan_to_num(v, nan=0.01) for k, v in state["model"].items()}
    io.save_checkpoint(poisoned, state)
    trained: list[int] = []
    original = train.PathsRun.run

    def spy(self) -> list[str]:
        trained.extend(s.branch_epoch for s in self.specs)
        return original(self)

    monkeypatch.setattr(train.PathsRun, "run", spy)
    train_all(config)
    assert trained == [4]
    assert {b: p.stat().st_mtime_ns for b, p in finished.items() if p.exists()} in ({}, stamps)
    metrics = pd.read_csv(lrconfig.Plan(config).group_dir(0) / "metrics.csv")
    assert sorted(metrics["branch_epoch"].unique()) == [2, 4, 6]
    assert np.isfinite(metrics["train_loss"]).all()
