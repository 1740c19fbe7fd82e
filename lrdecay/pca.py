"""PCA of all parameter snapshots (main path and subpaths), as in the paper's Section 2.2.

`exact` stacks every snapshot in memory (scikit-learn PCA); `incremental` streams chunks of rows
from the memory-mapped trajectories (scikit-learn IncrementalPCA), for studies whose snapshots
do not fit in memory. Both return the same quantities up to numerical precision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA, IncrementalPCA

from lrdecay import io
from lrdecay.trajectories import iter_trajectories

log = logging.getLogger(__name__)


@dataclass
class PCAResult:
    mean: np.ndarray  # (n_params,) float64
    components: np.ndarray  # (n_components, n_params) float64, orthonormal rows
    explained_variance: np.ndarray  # (n_components,)
    explained_variance_ratio: np.ndarray  # (n_components,) fraction of the total variance

    def project(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (n, k) and distance of each row from the PC1-PC2 plane (n,)."""
        centred = rows.astype(np.float64) - self.mean
        coords = centred @ self.components.T
        in_plane = coords[:, :2] @ self.components[:2]
        return coords, np.linalg.norm(centred - in_plane, axis=1)


Trajectories = list[tuple[np.ndarray, dict]]  # (memory-mapped (n, n_params), sidecar) per path


def _chunks(trajectories: Trajectories, rows: int):
    for array, meta in trajectories:
        for start in range(0, len(array), rows):
            yield np.asarray(array[start : start + rows], dtype=np.float64), meta, start


def _fit(trajectories: Trajectories, n_components: int, method: str,
         chunk_rows: int) -> PCAResult:
    """Fit on trajectories opened (and checksum-verified) once by the caller."""
    rows = sum(len(array) for array, _ in trajectories)
    n_components = min(n_components, rows)
    n_params = trajectories[0][0].shape[1] if trajectories else 0
    log.info("PCA (%s) of %d snapshots x %d parameters from %d trajectories: %d components",
             method, rows, n_params, len(trajectories), n_components)
    started = time.monotonic()
    if method == "exact":
        stacked = np.concatenate([np.asarray(a, dtype=np.float64) for a, _ in trajectories])
        model = PCA(n_components=n_components, svd_solver="full").fit(stacked)
    else:
        model = IncrementalPCA(n_components=n_components)
        pending, done = [], 0
        for chunk, _, _ in _chunks(trajectories, chunk_rows):
            pending.append(chunk)
            if sum(len(c) for c in pending) >= max(chunk_rows, n_components):
                done += sum(len(c) for c in pending)
                model.partial_fit(np.concatenate(pending))
                pending = []
                log.info("PCA fit: %d/%d snapshots, %.1fs", done, rows, time.monotonic() - started)
        if pending:  # a last batch smaller than n_components would be rejected: merge it back
            model.partial_fit(np.concatenate(pending))
    log.info("PCA fit done in %.1fs; explained variance ratio %s", time.monotonic() - started,
             np.round(model.explained_variance_ratio_, 4).tolist())
    return PCAResult(model.mean_, model.components_, model.explained_variance_,
                     model.explained_variance_ratio_)


class DegeneratePCAError(ValueError):
    """The snapshots cannot give the principal components asked for (the message says why)."""


def check_snapshots(trajectories: Trajectories, n_components: int) -> None:
    """Before fitting: enough snapshots for `n_components` components with variance (centring
    takes one: n snapshots span at most n - 1 directions)."""
    rows = sum(len(array) for array, _ in trajectories)
    if rows < n_components + 1:
        raise DegeneratePCAError(
            f"PCA of {rows} snapshot(s) for {n_components} components: {rows} snapshots span at "
            f"most {max(rows - 1, 0)} direction(s) once centred, fewer snapshots than "
            f"components. Fix: give at least {n_components + 1} snapshots (save them more often: "
            "trajectory.every_epochs, or pass more trajectory files) or ask for fewer components "
            "(pca.n_components, lrdecay pca --components)"
        )


# A component whose variance is below this fraction of PC1's is taken for rounding noise.
ZERO_VARIANCE = 1e-12


def check_fit(result: PCAResult, rows: int) -> None:
    """After fitting: every component carries variance, so no ratio is NaN and the PC1-PC2
    plane (and any further axis) is a direction the snapshots really move along."""
    variance = np.asarray(result.explained_variance, dtype=np.float64)
    ratio = np.asarray(result.explained_variance_ratio, dtype=np.float64)
    top = float(variance[0]) if variance.size and np.isfinite(variance[0]) else 0.0
    if top <= 0 or not np.isfinite(ratio).all():
        raise DegeneratePCAError(
            f"PCA of {rows} snapshots: all of them are identical, so there is no variance to "
            "explain (every ratio would be NaN). Fix: check that these are a training run's "
            "snapshots at different epochs (the learning rate moves the parameters, the files "
            "are not copies of one snapshot)"
        )
    flat = [i + 1 for i, v in enumerate(variance) if not v > ZERO_VARIANCE * top]
    if flat:
        raise DegeneratePCAError(
            f"PCA of {rows} snapshots: they vary along only {flat[0] - 1} direction(s), so "
            f"component(s) {flat} carry no variance. Fix: ask for {flat[0] - 1} component(s) "
            "at most (pca.n_components, lrdecay pca --components; Figure 2 needs 2), or give "
            "snapshots that move in more directions"
        )


def run(files: list[Path], pca_config: dict, out_variance: str | Path, out_coords: str | Path,
        out_basis: str | Path, config_hash: str) -> PCAResult:
    """Fit, then write the explained-variance table, every snapshot's coordinates, the basis."""
    trajectories = list(iter_trajectories(files))  # verify each file's checksum once
    return run_on(trajectories, pca_config, out_variance, out_coords, out_basis, config_hash)


def run_on(trajectories: Trajectories, pca_config: dict, out_variance: str | Path,
           out_coords: str | Path, out_basis: str | Path, config_hash: str) -> PCAResult:
    """`run` over trajectories already opened: (array (n_snapshots, n_params), sidecar) pairs,
    the main path first (`lrdecay pca` passes files that have no checksum record). Degenerate
    snapshots (too few, identical) stop with DegeneratePCAError before anything is written."""
    check_snapshots(trajectories, pca_config["n_components"])
    result = _fit(trajectories, pca_config["n_components"], pca_config["method"],
                  pca_config["chunk_rows"])
    check_fit(result, sum(len(array) for array, _ in trajectories))
    k = len(result.components)
    io.write_csv(out_variance, pd.DataFrame({
        "component": np.arange(1, k + 1),
        "explained_variance": result.explained_variance,
        "explained_variance_ratio": result.explained_variance_ratio,
        "cumulative_ratio": np.cumsum(result.explained_variance_ratio),
    }))
    frames = []
    for chunk, meta, start in _chunks(trajectories, pca_config["chunk_rows"]):
        coords, distance = result.project(chunk)
        epochs = meta["epochs"][start : start + len(chunk)]
        frame = pd.DataFrame(coords, columns=[f"pc{i + 1}" for i in range(k)])
        frame.insert(0, "epoch", epochs)
        frame.insert(0, "branch_epoch", meta["branch_epoch"])
        frame.insert(0, "path", "main" if meta["branch_epoch"] is None else "subpath")
        frame["distance_to_plane"] = distance
        frames.append(frame)
    coordinates = pd.concat(frames, ignore_index=True)
    coordinates["branch_epoch"] = coordinates["branch_epoch"].astype("Int64")
    io.write_csv(out_coords, coordinates)
    log.info("wrote %d coordinates to %s", len(coordinates), out_coords)
    basis = np.vstack([result.mean[None], result.components]).astype(np.float64)
    io.save_array(out_basis, basis, {
        "layout": "row 0: PCA mean; rows 1..k: principal components (orthonormal)",
        "explained_variance_ratio": result.explained_variance_ratio.tolist(),
        "config_hash": config_hash,
    })
    return result
