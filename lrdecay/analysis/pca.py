"""PCA of all parameter snapshots (main path and subpaths), as in the paper's Section 2.2.

`exact` is an eigendecomposition of the centred snapshots' Gram matrix X Xᵀ (n x n, n snapshots)
or, when there are more snapshots than parameters, of Xᵀ X: the same principal directions and
variances as a full SVD of X (scikit-learn's `svd_solver="full"`, agreement measured in
tests/test_pca.py and benchmarks/pca_solver.py), at n²p instead of n²p + the SVD of an n x p
matrix, and with the snapshots read a block of parameters at a time instead of stacked as float64
(quick preset, 661 x 85,002: see benchmarks/RESULTS.md). `incremental` streams chunks of rows
from the memory-mapped trajectories (scikit-learn IncrementalPCA), for studies whose Gram matrix
does not fit in memory; it agrees with `exact` to about 1e-4.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import IncrementalPCA

from lrdecay.core import io, logs
from lrdecay.study import pca_budget
from lrdecay.training.trajectories import iter_trajectories

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


def _row_blocks(trajectories: Trajectories, rows: int, least: int):
    """Every snapshot in blocks of exactly `rows` rows across trajectory boundaries (a last block
    of fewer than `least` rows joins the one before), each read straight into one float64 buffer:
    the block never exceeds what lrdecay.study.pca_budget.pca_block_rows budgets for."""
    total = sum(len(array) for array, _ in trajectories)
    sizes = [rows] * (total // rows) + ([total % rows] if total % rows else [])
    if len(sizes) > 1 and sizes[-1] < least:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    buffer = np.empty((max(sizes, default=0), trajectories[0][0].shape[1] if total else 0))
    arrays = (array for array, _ in trajectories)
    array, start = None, 0
    for size in sizes:
        filled = 0
        while filled < size:
            if array is None or start >= len(array):
                array, start = next(arrays), 0  # on into the next trajectory
            take = min(size - filled, len(array) - start)
            np.copyto(buffer[filled : filled + take], array[start : start + take],
                      casting="unsafe")
            filled, start = filled + take, start + take
        yield buffer[:size]


def _column_blocks(trajectories: Trajectories, cols: int, n_params: int):
    """(first column, every snapshot's values in a block of `cols` columns as float64)."""
    for c0 in range(0, n_params, cols):
        yield c0, np.concatenate([np.asarray(a[:, c0 : c0 + cols], dtype=np.float64)
                                  for a, _ in trajectories])


def _sign_fixed(components: np.ndarray) -> np.ndarray:
    """Each component's largest entry (in absolute value) positive: scikit-learn's svd_flip
    (u_based_decision=False), so coordinates keep the sign the full SVD gave them."""
    pivots = components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)]
    return components * np.where(pivots < 0, -1.0, 1.0)[:, None]


def _fit_exact(trajectories: Trajectories, n_components: int, chunk_rows: int,
               started: float) -> PCAResult:
    """Principal components from the eigenvectors of the centred snapshots' n x n Gram matrix
    (or p x p covariance if p < n): two passes over the data, a block at a time. A block holds
    as many values as `chunk_rows` snapshots (a block of columns of every snapshot, or of
    rows), so `pca.chunk_rows` bounds the memory of both methods (lrdecay.config.resources).

    With X = U S Vᵀ centred, X Xᵀ = U S² Uᵀ and V = Xᵀ U S⁻¹; eigh of the small symmetric matrix
    gives S² and U to LAPACK's precision relative to the largest eigenvalue: each variance to
    ~eps * s_1², a component to ~eps * s_1² / (its gap to the next variance). The leading
    components of a trajectory carry most of the variance, so they agree with the full SVD to
    ~1e-15 (tests/test_pca.py and benchmarks/pca_solver.py measure it).
    """
    rows = sum(len(array) for array, _ in trajectories)
    n_params = trajectories[0][0].shape[1]
    dof = max(rows - 1, 1)
    if n_params < rows:  # covariance route: p x p, rows read in chunks
        mean = sum(c.sum(axis=0) for c, _, _ in _chunks(trajectories, chunk_rows)) / rows
        cov = np.zeros((n_params, n_params))
        for c, _, _ in _chunks(trajectories, chunk_rows):
            c = c - mean  # not in place: a float64 input chunk is a view of the caller's array
            cov += c.T @ c
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][:n_components]
        total, variances = np.trace(cov) / dof, np.clip(values[order], 0, None) / dof
        components = vectors[:, order].T
    else:
        cols = max(1, chunk_rows * n_params // rows)
        blocks = -(-n_params // cols)
        progress = logs.Progress("PCA (exact) Gram matrix", 2 * blocks, "column blocks",
                                 logger=log)
        mean, gram = np.empty(n_params), np.zeros((rows, rows))
        for c0, block in _column_blocks(trajectories, cols, n_params):
            mean[c0 : c0 + block.shape[1]] = block.mean(axis=0)
            block -= mean[c0 : c0 + block.shape[1]]
            gram += block @ block.T
            progress.advance()
        values, vectors = np.linalg.eigh(gram)
        order = np.argsort(values)[::-1][:n_components]
        total, variances = np.trace(gram) / dof, np.clip(values[order], 0, None) / dof
        # V = Xᵀ U / s, a block of columns at a time (second pass over the snapshots)
        scale = np.sqrt(variances * dof)
        left = vectors[:, order] / np.where(scale > 0, scale, 1.0)
        components = np.empty((len(order), n_params))
        for c0, block in _column_blocks(trajectories, cols, n_params):
            block -= mean[c0 : c0 + block.shape[1]]
            components[:, c0 : c0 + block.shape[1]] = left.T @ block
            progress.advance()
        # Xᵀ U S⁻¹ is orthonormal only to eps * s_1² / s_k² (1e-10 for a noise component of
        # 1e-6 of the variance): QR restores it without moving the leading components.
        q, r = np.linalg.qr(components.T)
        components = (q * np.sign(np.diag(r))).T
    components = _sign_fixed(components)
    ratio = variances / total if total > 0 else np.zeros_like(variances)
    log.info("PCA fit done in %.1fs; explained variance ratio %s", time.monotonic() - started,
             np.round(ratio, 4).tolist())
    return PCAResult(mean, components, variances, ratio)


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
        return _fit_exact(trajectories, n_components, chunk_rows, started)
    else:
        model = IncrementalPCA(n_components=n_components)
        progress = logs.Progress("PCA (incremental) fit", rows, "snapshots", logger=log)
        # a last batch smaller than n_components would be rejected: it joins the one before
        for block in _row_blocks(trajectories, max(chunk_rows, n_components), n_components):
            model.partial_fit(block)
            progress.advance(len(block))
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
        out_basis: str | Path, config_hash: str, mem_mb: int | None = None) -> PCAResult:
    """Fit, then write the explained-variance table, every snapshot's coordinates, the basis."""
    trajectories = list(iter_trajectories(files))  # verify each file's checksum once
    return run_on(trajectories, pca_config, out_variance, out_coords, out_basis, config_hash,
                  mem_mb)


def fitting_chunk(trajectories: Trajectories, pca_config: dict, mem_mb: int | None) -> dict:
    """`pca_config` with chunk_rows lowered so the job's modelled peak fits in `mem_mb` (the
    job's memory request, which the cluster's cap bounds: lrdecay.config.resources.Caps); unchanged
    where it fits or without a request. A smaller chunk moves incremental results by ~1e-4."""
    rows = sum(len(array) for array, _ in trajectories)
    chunk = pca_budget.pca_chunk_rows(
        mem_mb, pca_config["method"], pca_config["chunk_rows"], rows,
        trajectories[0][0].shape[1], pca_config["n_components"],
        max(array.dtype.itemsize for array, _ in trajectories))
    if chunk != pca_config["chunk_rows"]:
        log.info("PCA chunk of %d snapshots instead of pca.chunk_rows = %d: the job has %d MB "
                 "(its request, capped)", chunk, pca_config["chunk_rows"], mem_mb)
    return {**pca_config, "chunk_rows": chunk}


def run_on(trajectories: Trajectories, pca_config: dict, out_variance: str | Path,
           out_coords: str | Path, out_basis: str | Path, config_hash: str,
           mem_mb: int | None = None) -> PCAResult:
    """`run` over trajectories already opened: (array (n_snapshots, n_params), sidecar) pairs,
    the main path first (`lrdecay pca` passes files that have no checksum record). Degenerate
    snapshots (too few, identical) stop with DegeneratePCAError before anything is written.
    With `mem_mb` (the job's request) the chunk is chosen to fit in it (fitting_chunk)."""
    check_snapshots(trajectories, pca_config["n_components"])
    pca_config = fitting_chunk(trajectories, pca_config, mem_mb)
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
    progress = logs.Progress("PCA coordinates", sum(len(a) for a, _ in trajectories),
                             "snapshots", logger=log)
    for chunk, meta, start in _chunks(trajectories, pca_config["chunk_rows"]):
        coords, distance = result.project(chunk)
        progress.advance(len(chunk))
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
