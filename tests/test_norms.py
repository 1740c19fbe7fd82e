"""Parameter norms in metrics.csv: by hand, and against the saved trajectories of a real run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.training import engine, trajectories
from tests.conftest import engine_config, train_all


def test_norm_values_by_hand() -> None:
    layers = engine.layer_slices([("0.weight", 3), ("0.bias", 1), ("2.weight", 2)])
    assert layers == {"0": [slice(0, 3), slice(3, 4)], "2": [slice(4, 6)]}
    assert engine.layer_norm_columns(layers) == ["norm.0", "norm.2"]
    flat = torch.tensor([[3.0, 0, 0, 4, 1, 0], [0, 0, 0, 0, 0, 2]])
    origin = torch.tensor([[3.0, 0, 0, 4, 1, 1], [0, 0, 0, 0, 0, 0]])
    got = engine.norm_values(flat, origin, layers).tolist()
    assert got == [pytest.approx([np.sqrt(26), 1, 5, 1]), pytest.approx([2, 2, 0, 2])]


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """float32 norms of a few thousand parameters against float64 ones of the saved float32
    snapshots: measured within 2e-7 relative; 1e-5 of the path's largest norm allowed."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("mode", ["vmap"])  # sequential == vmap: tests/test_batched.py
def test_metrics_norms_are_the_trajectories_norms(tmp_path, mode: str) -> None:
    """Every epoch of every path: param_norm and per-layer norms of the snapshot, distance from
    epoch 0 (main path, across segment jobs) or from the branch point (subpaths)."""
    config = engine_config(tmp_path, engine={"batched_subpaths": mode})
    train_all(config)
    plan = lrconfig.Plan(config)
    segments = [plan.segment_dir(e) for e in [0, *plan.segment_ends]]
    trajectories.gather_main(segments, tmp_path / "main.npy")
    main = np.load(tmp_path / "main.npy").astype(np.float64)
    metrics = pd.read_csv(plan.group_dir(0) / "metrics.csv")
    main_rows = pd.concat([pd.read_csv(d / "metrics.csv") for d in segments])
    layer_columns = [c for c in metrics if c.startswith(engine.LAYER_NORM_PREFIX)]
    assert layer_columns == ["norm.1", "norm.3"]  # the MLP's two linear layers
    assert list(main_rows.columns) == engine.METRIC_COLUMNS + layer_columns
    sizes = [64 * 32 + 32, 32 * 10 + 10]
    paths = [(main_rows.sort_values("epoch"), main, main[0])]
    for b in plan.subpath_groups[0]:
        snap = np.load(plan.group_dir(0) / f"branch-{b:04d}.npy").astype(np.float64)
        paths.append((metrics[metrics["branch_epoch"] == b].sort_values("epoch"), snap, snap[0]))
    for rows, snap, start in paths:
        assert len(rows) == len(snap)
        _close(rows["param_norm"].to_numpy(), np.linalg.norm(snap, axis=1))
        _close(rows["distance_from_start"].to_numpy(), np.linalg.norm(snap - start, axis=1))
        pieces = np.split(snap, np.cumsum(sizes)[:-1], axis=1)
        for column, piece in zip(layer_columns, pieces, strict=True):
            _close(rows[column].to_numpy(), np.linalg.norm(piece, axis=1))
    assert main_rows["distance_from_start"].iloc[0] == 0
    assert (metrics.loc[metrics["epochs_after_decay"] == 0, "distance_from_start"] == 0).all()
