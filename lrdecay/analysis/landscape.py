"""Train and test loss on a grid around the trajectories, centred at the PCA mean (Figure 2).

The grid lies in the PC1-PC2 plane, or (``landscape.surface: curved``, as in the authors' code)
on that plane bent along PC3: grid point (a, b) is mean + a*pc1 + b*pc2 + q(a)*pc3, with q the
least-squares quadratic of the snapshots' PC3 coordinate against their PC1 coordinate, so that a
trajectory that curves out of the plane stays on the surface whose losses the figure draws.

The grid is split into shards (every n-th point), so shard jobs can run on separate machines and
a gather step joins them into one table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from lrdecay.core import io
from lrdecay.training import models
from lrdecay.training.data import DeviceData, subset
from lrdecay.training.engine import Trainer, configure_backend, resolve_device

log = logging.getLogger(__name__)
BASIS_FIX = "delete it and rerun: snakemake --forcerun pca"
CURVED_FIX = "set pca.n_components to 3 or more, or landscape.surface: plane"
Vector = TypeVar("Vector", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Surface:
    """The grid's height along PC3 above grid point (a, b): q(a) = q2*a^2 + q1*a + q0.

    All zero is the PC1-PC2 plane.
    """

    q0: float = 0.0
    q1: float = 0.0
    q2: float = 0.0

    @property
    def flat(self) -> bool:
        return self.q0 == self.q1 == self.q2 == 0.0

    def height(self, a: np.ndarray | float) -> np.ndarray | float:
        return self.q2 * np.square(a) + self.q1 * np.asarray(a) + self.q0


def fit_surface(coordinates: pd.DataFrame) -> Surface:
    """Least-squares quadratic of every snapshot's PC3 coordinate against its PC1 coordinate
    (main path and subpaths together, the points the PCA was fitted on)."""
    if "pc3" not in coordinates:
        raise ValueError(f"the curved landscape surface needs PC3 coordinates, but the PCA kept "
                         f"{sum(c.startswith('pc') for c in coordinates)} components: {CURVED_FIX}")
    if len(coordinates) < 3:
        raise ValueError(f"a quadratic fit of PC3 against PC1 needs at least 3 snapshots, got "
                         f"{len(coordinates)}: record more snapshots (trajectory.every_epochs) or "
                         f"set landscape.surface: plane")
    q0, q1, q2 = np.polynomial.polynomial.polyfit(coordinates["pc1"], coordinates["pc3"], 2)
    return Surface(float(q0), float(q1), float(q2))


def surface_for(land: dict, coordinates: pd.DataFrame) -> Surface:
    """The surface the config asks for: the plane, or the fit to these coordinates."""
    return fit_surface(coordinates) if land["surface"] == "curved" else Surface()


def point_parameters(basis: Vector, a: float, b: float, surface: Surface) -> Vector:
    """Flat parameters at grid point (a, b): basis rows are mean, pc1, pc2[, pc3]; pc3 is only
    read when the surface is curved, so the plane gives exactly mean + a*pc1 + b*pc2."""
    params = basis[0] + a * basis[1] + b * basis[2]
    if not surface.flat:
        params = params + float(surface.height(a)) * basis[3]
    return params


def distance_in_pc13(pc1: np.ndarray, pc3: np.ndarray, surface: Surface) -> np.ndarray:
    """Euclidean distance from each point (pc1, pc3) to the curve {(a, q(a))}: the surface seen
    in the PC1-PC3 plane (it does not bend along PC2).

    The nearest curve point is a real root of g(a) = d/da [(a - pc1)^2 + (q(a) - pc3)^2] / 2, a
    cubic. Candidates: the cubic's roots (companion-matrix eigenvalues, all points at once), the
    point straight below (a = pc1) and the nearest point of the tangent line through q's linear
    part, each also after Newton steps on g; every candidate is a point on the curve, so the
    smallest distance among them is exact once one of them is the root, and never too small.
    """
    x, y = np.asarray(pc1, dtype=float), np.asarray(pc3, dtype=float)
    q0, q1, q2 = surface.q0, surface.q1, surface.q2
    c = q0 - y
    coeffs = np.stack(np.broadcast_arrays(2 * q2 * q2, 3 * q1 * q2, 1 + q1 * q1 + 2 * q2 * c,
                                          q1 * c - x), axis=-1)  # (n, 4), highest power first
    candidates = [x, (x - q1 * c) / (1 + q1 * q1)]
    # a nearly flat q gives huge or overflowing roots: harmless, as non-finite ones are dropped
    with np.errstate(all="ignore"):
        if 2 * q2 * q2 > 0:
            companion = np.zeros((len(x), 3, 3))
            companion[:, 0, :] = -coeffs[:, 1:] / coeffs[:, :1]
            companion[:, 1, 0] = companion[:, 2, 1] = 1.0
            finite = np.isfinite(companion).all(axis=(1, 2))
            roots = np.full((len(x), 3), np.nan)
            roots[finite] = np.linalg.eigvals(companion[finite]).real
            candidates += list(roots.T)
        polished = []
        for a in candidates:
            for _ in range(3):
                g = ((coeffs[:, 0] * a + coeffs[:, 1]) * a + coeffs[:, 2]) * a + coeffs[:, 3]
                slope = (3 * coeffs[:, 0] * a + 2 * coeffs[:, 1]) * a + coeffs[:, 2]
                a = a - g / slope
            polished.append(a)
        a = np.stack(candidates + polished)  # (m, n) curve points
        squared = (a - x) ** 2 + (surface.height(a) - y) ** 2
    return np.sqrt(np.nanmin(np.where(np.isfinite(squared), squared, np.nan), axis=0))


def surface_table(coordinates: pd.DataFrame, surface: Surface) -> pd.DataFrame:
    """How far every snapshot lies from the grid's surface, one row per snapshot.

    ``pc3_residual`` is pc3 - q(pc1), the height above the surface along PC3. ``distance_pc123``
    is the Euclidean distance from the snapshot's PC1-PC3 coordinates to the nearest point of the
    surface (PC2 does not bend it, so this is a point-to-parabola distance in the PC1-PC3 plane):
    how far the drawn trajectory point lies from the landscape drawn under it, within the space
    the surface lives in. ``distance`` adds the part of the snapshot outside PC1-PC3 (from the
    coordinates' distance to the PC1-PC2 plane), the full distance in parameter space.
    """
    pc1, pc3 = coordinates["pc1"].to_numpy(float), coordinates["pc3"].to_numpy(float)
    within = distance_in_pc13(pc1, pc3, surface)
    outside_sq = np.clip(coordinates["distance_to_plane"].to_numpy(float) ** 2 - pc3**2, 0, None)
    table = coordinates[["path", "branch_epoch", "epoch", "pc1", "pc2", "pc3"]].copy()
    table["pc3_residual"] = pc3 - surface.height(pc1)
    table["distance_pc123"] = within
    table["distance"] = np.sqrt(within**2 + outside_sq)
    for name in ("q0", "q1", "q2"):
        table[name] = getattr(surface, name)
    return table


def write_surface(land: dict, coordinates_path: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Fit the configured surface to the snapshots and write every snapshot's distance from it."""
    coordinates = pd.read_csv(coordinates_path)
    surface = surface_for(land, coordinates)
    table = surface_table(coordinates, surface)
    log.info("landscape surface %s: q(a) = %.6g a^2 %+.6g a %+.6g; distance from it in "
             "PC1-PC3: median %.4g, max %.4g", land["surface"], surface.q2, surface.q1,
             surface.q0, table["distance_pc123"].median(), table["distance_pc123"].max())
    io.write_csv(out_path, table)
    return table


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


class BatchNormStats:
    """Running statistics at a grid point (landscape.bn_stats), for models with batch norm.

    A grid point is a parameter vector (trajectories hold parameters only), so its batch norm
    statistics are not in any file: `recompute` resets them and re-estimates them in train mode
    (momentum None: the cumulative average over the batches, no gradient) on a fixed subset of
    landscape.bn_samples training images (seed 0, no augmentation, the same at every point),
    in batches of metrics.eval_batch_size; `batch` drops them, so every evaluation batch is
    normalised by its own statistics. Models without batch norm pass through untouched.
    """

    def __init__(self, land: dict, trainer: Trainer, model: torch.nn.Module):
        self.trainer = trainer
        self.mode = land.get("bn_stats", "recompute")
        self.norms = [m for m in model.modules()
                      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.images = None
        if models.has_batch_norm(model) and self.mode == "recompute":
            data = trainer.data
            index = subset(len(data.train_y), land.get("bn_samples", 1000), 0).to(trainer.device)
            self.images = data.train_x[index]
        if self.norms and self.mode == "batch":
            for norm in self.norms:  # eval mode without running statistics: batch statistics
                norm.running_mean = norm.running_var = None

    @torch.no_grad()
    def at_point(self, model: torch.nn.Module) -> None:
        """Set the statistics for the parameters `model` now holds (recompute), else nothing."""
        if self.images is None:
            return
        saved = [norm.momentum for norm in self.norms]
        for norm in self.norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch weighs its images
        model.train()
        step = self.trainer.eval_batch
        for start in range(0, len(self.images), step):
            with self.trainer.autocast():
                model(self.trainer.data.to_float(self.images[start : start + step]))
        for norm, momentum in zip(self.norms, saved, strict=True):
            norm.momentum = momentum
        model.eval()


def evaluate_shard(config: dict, data_path: str | Path, basis_path: str | Path,
                   coordinates_path: str | Path, shard: int, n_shards: int,
                   out_path: str | Path, device_name: str, threads: int | None = None) -> None:
    """Evaluate every n_shards-th grid point starting at `shard`; write one row per point."""
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    coordinates = pd.read_csv(coordinates_path)
    surface = surface_for(config["landscape"], coordinates)  # before any expensive work
    basis, _ = io.load_array(basis_path, BASIS_FIX)
    rows_needed = 3 if surface.flat else 4
    if len(basis) < rows_needed:
        raise ValueError(f"{basis_path} holds {len(basis) - 1} components; the curved surface "
                         f"needs PC3: {CURVED_FIX}")
    # (3 or 4, n_params): PCA mean, PC1, PC2[, PC3] (copied out of the read-only memory map)
    basis = torch.from_numpy(np.array(basis[:rows_needed], dtype=np.float32)).to(device)
    data = DeviceData(data_path, device, config["data"]["normalize"], augment=False)
    trainer = Trainer(config, data, device)
    model = trainer.build_model()
    bn_stats = BatchNormStats(config["landscape"], trainer, model)
    points = grid_points(config["landscape"], coordinates).iloc[shard::n_shards]
    rows, started = [], time.monotonic()
    for i, point in enumerate(points.itertuples(index=False), start=1):
        params = point_parameters(basis, point.pc1, point.pc2, surface)
        torch.nn.utils.vector_to_parameters(params, model.parameters())
        bn_stats.at_point(model)
        train = trainer.evaluate(model, data.train_x, data.train_y)
        test = trainer.evaluate(model, data.test_x, data.test_y)
        values = torch.stack([*train, *test]).tolist()
        rows.append({"point": point.point, "pc1": point.pc1, "pc2": point.pc2,
                     "pc3": float(surface.height(point.pc1)),
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
