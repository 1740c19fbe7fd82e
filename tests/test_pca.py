"""Trajectory PCA against scikit-learn on synthetic trajectories in the pipeline's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from lrdecay import io, pca


def write_trajectories(folder: Path, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """A main path and two subpaths: rank-3 signal (variances 25, 4, 1) plus small noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, 40))
    files, rows = [], []
    for name, branch, n in [("main", None, 30), ("branch-0010", 10, 12), ("branch-0020", 20, 9)]:
        coefficients = rng.normal(size=(n, 3)) * [5.0, 2.0, 1.0]
        array = (coefficients @ basis + 0.01 * rng.normal(size=(n, 40))).astype(np.float32)
        path = folder / f"{name}.npy"
        io.save_array(path, array, {"path": name, "branch_epoch": branch,
                                    "epochs": list(range(n))})
        files.append(path)
        rows.append(array)
    return files, np.concatenate(rows).astype(np.float64)


def run_pca(files: list[Path], out: Path, n_components: int, method: str = "exact",
            chunk_rows: int = 5) -> pca.PCAResult:
    """The pipeline's PCA job (lrdecay.pca.run) with its outputs under `out`."""
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
