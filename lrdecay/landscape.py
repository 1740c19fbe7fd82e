"""Train and test loss on a grid in the PC1-PC2 plane centred at the PCA mean (Figure 2).

The grid is split into shards (every n-th point), so shard jobs can run on separate machines and
a gather step joins them into one table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrdecay import io
from lrdecay.data import DeviceData
from lrdecay.engine import Trainer, configure_backend, resolve_device

log = logging.getLogger(__name__)
BASIS_FIX = "delete it and rerun: snakemake --forcerun pca"


def grid_axes(land: dict, coordinates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """PC1 and PC2 values of the grid: explicit, or the trajectories' span plus a margin."""
    nx, ny = land["points"]
    if land["range"] == "explicit":
        (x0, x1), (y0, y1) = land["pc1"], land["pc2"]
    else:
        spans = []
        for axis in ("pc1", "pc2"):
            low, high = coordinates[axis].min(), coordinates[axis].max()
            pad = land["margin"] * max(high - low, 1e-12)
            spans.append((low - pad, high + pad))
        (x0, x1), (y0, y1) = spans
    return np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)


def grid_points(land: dict, coordinates: pd.DataFrame) -> pd.DataFrame:
    """Every grid point with its index, row-major over (pc2, pc1)."""
    xs, ys = grid_axes(land, coordinates)
    pc1, pc2 = np.meshgrid(xs, ys)
    return pd.DataFrame({"point": np.arange(pc1.size), "pc1": pc1.ravel(), "pc2": pc2.ravel()})


def evaluate_shard(config: dict, data_path: str | Path, basis_path: str | Path,
                   coordinates_path: str | Path, shard: int, n_shards: int,
                   out_path: str | Path, device_name: str, threads: int | None = None) -> None:
    """Evaluate every n_shards-th grid point starting at `shard`; write one row per point."""
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    basis, _ = io.load_array(basis_path, BASIS_FIX)
    # (3, n_params): PCA mean, PC1, PC2 (copied out of the read-only memory map)
    mean, pc1, pc2 = torch.from_numpy(np.array(basis[:3], dtype=np.float32)).to(device)
    data = DeviceData(data_path, device, config["data"]["normalize"], augment=False)
    trainer = Trainer(config, data, device)
    model = trainer.build_model()
    points = grid_points(config["landscape"], pd.read_csv(coordinates_path)).iloc[shard::n_shards]
    rows, started = [], time.monotonic()
    for i, point in enumerate(points.itertuples(index=False), start=1):
        params = mean + point.pc1 * pc1 + point.pc2 * pc2
        torch.nn.utils.vector_to_parameters(params, model.parameters())
        train = trainer.evaluate(model, data.train_x, data.train_y)
        test = trainer.evaluate(model, data.test_x, data.test_y)
        values = torch.stack([*train, *test]).tolist()
        rows.append({"point": point.point, "pc1": point.pc1, "pc2": point.pc2,
                     "train_loss": values[0], "train_acc": values[1],
                     "test_loss": values[2], "test_acc": values[3]})
        if i % max(1, len(points) // 10) == 0:
            log.info("landscape shard %d: %d/%d points, %.1fs", shard, i, len(points),
                     time.monotonic() - started)
    io.write_csv(out_path, pd.DataFrame(rows))


def gather(shard_paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_csv(p) for p in shard_paths]).sort_values("point")
    io.write_csv(out_path, frame)
    return frame
