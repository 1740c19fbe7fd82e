"""Landscape grid: values equal a direct evaluation, shards cover the grid exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrdecay.analysis import landscape
from lrdecay.core import io
from lrdecay.training import engine, models
from lrdecay.training.data import DeviceData


@pytest.mark.parametrize("surface", ["plane", "curved"])
def test_grid_values_match_direct_evaluation(tiny_data, tmp_path: Path, surface: str) -> None:
    """Each grid point's losses are the model's at mean + a*pc1 + b*pc2 + q(a)*pc3, with q the
    quadratic through the snapshots' (pc1, pc3) (here exactly q(a) = 0.5 a^2 - a + 0.25; the
    plane: 0)."""
    cfg, data_path = tiny_data
    cfg["landscape"]["surface"] = surface
    torch.manual_seed(0)
    template = models.build(cfg["model"], (64,), 10)
    n_params = sum(p.numel() for p in template.parameters())
    rng = np.random.default_rng(0)
    mean = rng.normal(scale=0.1, size=n_params)
    pcs, _ = np.linalg.qr(rng.normal(size=(n_params, 3)))
    io.save_array(tmp_path / "basis.npy", np.vstack([mean, pcs.T]), {"layout": "test"})
    coords = pd.DataFrame({"pc1": [-1.0, 0.5, 2.0], "pc2": [-0.5, 0.0, 1.5]})
    coords["pc3"] = 0.5 * coords["pc1"] ** 2 - coords["pc1"] + 0.25
    coords.to_csv(tmp_path / "coords.csv", index=False)
    shards = []
    for shard in range(3):
        out = tmp_path / f"shard-{shard}.csv"
        landscape.evaluate_shard(cfg, data_path, tmp_path / "basis.npy", tmp_path / "coords.csv",
                                 shard, 3, out, "cpu", 1)
        shards.append(out)
    grid = landscape.gather(shards, tmp_path / "grid.csv")
    nx, ny = cfg["landscape"]["points"]
    assert sorted(grid["point"]) == list(range(nx * ny))  # each point once
    margin = cfg["landscape"]["margin"]
    assert np.isclose(grid["pc1"].min(), -1.0 - margin * 3.0)  # auto range: span plus margin

    data = DeviceData(data_path, torch.device("cpu"), cfg["data"]["normalize"], augment=False)
    loss = engine.loss_function(cfg["loss"])
    model = models.build(cfg["model"], (64,), 10)
    height = (0.5 * grid["pc1"] ** 2 - grid["pc1"] + 0.25) if surface == "curved" else 0.0
    np.testing.assert_allclose(grid["pc3"], height, atol=1e-12)
    for row in grid.sample(4, random_state=0).itertuples():
        params = mean + row.pc1 * pcs[:, 0] + row.pc2 * pcs[:, 1] + row.pc3 * pcs[:, 2]
        torch.nn.utils.vector_to_parameters(torch.tensor(params, dtype=torch.float32),
                                            model.parameters())
        with torch.no_grad():
            direct = loss(model(data.to_float(data.test_x)), data.test_y).item()
            acc = (model(data.to_float(data.train_x)).argmax(-1) == data.train_y).float().mean()
        assert np.isclose(row.test_loss, direct, rtol=1e-5)
        assert np.isclose(row.train_acc, acc.item(), rtol=1e-6)


def test_explicit_range() -> None:
    land = {"range": "explicit", "pc1": [-2.0, 2.0], "pc2": [0.0, 1.0], "points": [5, 3],
            "margin": 0.0}
    xs, ys = landscape.grid_axes(land, pd.DataFrame())
    np.testing.assert_allclose(xs, [-2, -1, 0, 1, 2])
    np.testing.assert_allclose(ys, [0, 0.5, 1])
