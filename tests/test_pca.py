"""Trajectory PCA against scikit-learn on synthetic trajectories in the pipeline's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from lrdecay.analysis import pca
from lrdecay.core import io


def write_trajectories(folder: Path, seed: int = 0,
                       n_params: int = 40) -> tuple[list[Path], np.ndarray]:
    """A main path and two subpaths (51 snapshots): rank-3 signal (variances 25, 4, 1) plus small
    noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, n_params))
    files, rows = [], []
    for name, branch, n in [("main", None, 30), ("branch-0010", 10, 12), ("branch-0020", 20, 9)]:
        coefficients = rng.normal(size=(n, 3)) * [5.0, 2.0, 1.0]
        noise = 0.01 * rng.normal(size=(n, n_params))
        array = (coefficients @ basis + noise).astype(np.float32)
        path = folder / f"{name}.npy"
        io.save_array(path, array, {"path": name, "branch_epoch": branch,
                                    "epochs": list(range(n))})
        files.append(path)
        rows.append(array)
    return files, np.concatenate(rows).astype(np.float64)


def run_pca(files: list[Path], out: Path, n_components: int, method: str = "exact",
            chunk_rows: int = 5) -> pca.PCAResult:
    """The pipeline's PCA job (lrdecay.analysis.pca.run) with its outputs under `out`."""
    cfg = {"n_components": n_components, "method": method, "chunk_rows": chunk_rows}
    return pca.run(files, cfg, out / "var.csv", out / "coords.csv", out / "basis.npy", "h")


def test_exact_matches_sklearn(tmp_path: Path) -> None:
    files, stacked = write_trajectories(tmp_path)
    result = run_pca(files, tmp_path / "out", 4, method="exact")
    reference = PCA(n_components=4).fit(stacked)
    np.testing.assert_allclose(result.explained_variance_ratio,
                               reference.explained_variance_ratio_, rtol=1e-9)
    np.testing.assert_allclose(np.abs(result.components @ reference.components_.T),
                               np.eye(4), atol=1e-8)
    # The written table and basis hold the same answer (columns and rows in their places).
    variance = pd.read_csv(tmp_path / "out" / "var.csv")
    np.testing.assert_allclose(variance["explained_variance"], reference.explained_variance_,
                               rtol=1e-9)
    np.testing.assert_allclose(variance["explained_variance_ratio"],
                               reference.explained_variance_ratio_, rtol=1e-9)
    np.testing.assert_allclose(variance["cumulative_ratio"],
                               np.cumsum(reference.explained_variance_ratio_), rtol=1e-9)
    basis, _ = io.load_array(tmp_path / "out" / "basis.npy", "rerun")
    np.testing.assert_allclose(basis[0], stacked.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(np.abs(basis[1:] @ reference.components_.T), np.eye(4), atol=1e-8)


@pytest.mark.parametrize("n_params", [40, 400])  # fewer (covariance) and more (Gram) than rows
def test_exact_equals_the_full_svd(tmp_path: Path, n_params: int) -> None:
    """The exact method (eigh of the Gram or covariance matrix, a few columns or rows at a time)
    gives scikit-learn's full SVD: variances, ratios, mean and the components with their signs.

    Its error is absolute, ~eps times the largest variance (a relative bound would fail on the
    noise components 4 and 5, at 4e-7 of the variance). Measured over seeds 0-2 and both shapes:
    ratios <= 5.6e-16, variances <= 1.2e-15 of the total, entries of the three signal components
    <= 4.3e-15, orthonormality <= 1.1e-15; the bounds leave about 100x."""
    files, stacked = write_trajectories(tmp_path, n_params=n_params)
    # blocks of 2 rows (covariance) or of 2 * 400 / 51 = 15 columns (Gram)
    result = run_pca(files, tmp_path / "out", 5, method="exact", chunk_rows=2)
    full = PCA(n_components=5, svd_solver="full").fit(stacked)
    total = full.explained_variance_.sum() / full.explained_variance_ratio_.sum()
    np.testing.assert_allclose(result.explained_variance_ratio, full.explained_variance_ratio_,
                               rtol=0, atol=5e-14)
    np.testing.assert_allclose(result.explained_variance, full.explained_variance_, rtol=0,
                               atol=1e-13 * total)
    np.testing.assert_allclose(result.mean, full.mean_, rtol=0, atol=1e-13)
    # signs too: coordinates and figures keep the orientation the full SVD gave them
    np.testing.assert_allclose(result.components[:3], full.components_[:3], rtol=0, atol=5e-13)
    np.testing.assert_allclose(result.components @ result.components.T, np.eye(5), atol=1e-13)


def test_incremental_streams_to_the_same_answer(tmp_path: Path) -> None:
    files, stacked = write_trajectories(tmp_path)
    exact = run_pca(files, tmp_path / "exact", 3, method="exact")
    streamed = run_pca(files, tmp_path / "streamed", 3, method="incremental", chunk_rows=7)
    np.testing.assert_allclose(streamed.explained_variance_ratio,
                               exact.explained_variance_ratio, rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(streamed.components * exact.components, axis=1)),
                               1.0, atol=1e-4)


def test_run_writes_coordinates_and_plane_distance(tmp_path: Path) -> None:
    files, stacked = write_trajectories(tmp_path)
    cfg = {"n_components": 3, "method": "exact", "chunk_rows": 5}
    out = tmp_path / "out"
    result = pca.run(files, cfg, out / "var.csv", out / "coords.csv", out / "basis.npy", "h")
    coords = pd.read_csv(out / "coords.csv")
    assert len(coords) == len(stacked)
    assert coords["path"].tolist().count("main") == 30
    centred = stacked - stacked.mean(axis=0)
    expected = centred @ result.components.T
    np.testing.assert_allclose(coords[["pc1", "pc2", "pc3"]].to_numpy(), expected, atol=1e-5)
    plane = expected[:, :2] @ result.components[:2]
    np.testing.assert_allclose(coords["distance_to_plane"],
                               np.linalg.norm(centred - plane, axis=1), atol=1e-5)
    basis, meta = io.load_array(out / "basis.npy", "rerun")
    assert basis.shape == (4, 40)


def test_corrupt_trajectory_is_named(tmp_path: Path) -> None:
    files, _ = write_trajectories(tmp_path)
    with open(files[1], "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(io.CorruptFileError, match="branch-0010.npy"):
        run_pca(files, tmp_path / "out", 2)


def test_exact_covariance_route_leaves_float64_input_unchanged() -> None:
    """More snapshots than parameters (the p x p route) on float64 arrays held by the caller:
    the fit must not centre the caller's array in place (it raised on a read-only one)."""
    rng = np.random.default_rng(3)
    snapshots = rng.normal(size=(40, 6))
    before = snapshots.copy()
    snapshots.flags.writeable = False  # as a memory-mapped trajectory opened read-only
    result = pca._fit_exact([(snapshots, {})], n_components=3, chunk_rows=7, started=0.0)
    np.testing.assert_array_equal(snapshots, before)
    expected = PCA(n_components=3, svd_solver="full").fit(before).explained_variance_ratio_
    np.testing.assert_allclose(result.explained_variance_ratio, expected, rtol=1e-10)
