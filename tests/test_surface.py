"""The authors' curved landscape surface: the fit, the grid's parameters, distances from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lrdecay.analysis import landscape
from lrdecay.analysis.landscape import Surface
from lrdecay.analysis.pca import PCAResult
from lrdecay.config import validate as lrconfig

from .conftest import load_tiny

Q = Surface(q0=0.3, q1=-0.7, q2=0.25)


def _on_curve(pc1: np.ndarray, q: Surface) -> np.ndarray:
    """q(pc1) written out by hand, independent of Surface.height."""
    return q.q2 * pc1 * pc1 + q.q1 * pc1 + q.q0


def test_fit_recovers_known_coefficients() -> None:
    pc1 = np.random.default_rng(0).uniform(-20, 21, 200)
    coords = pd.DataFrame({"pc1": pc1, "pc2": 0.0, "pc3": _on_curve(pc1, Q)})
    fit = landscape.fit_surface(coords)
    np.testing.assert_allclose([fit.q0, fit.q1, fit.q2], [Q.q0, Q.q1, Q.q2], rtol=0, atol=1e-12)


def test_fit_is_least_squares_with_noise() -> None:
    """Residuals of a least-squares fit are orthogonal to 1, pc1 and pc1^2 (normal equations)."""
    rng = np.random.default_rng(1)
    pc1 = rng.uniform(-5, 5, 300)
    coords = pd.DataFrame({"pc1": pc1, "pc3": _on_curve(pc1, Q) + rng.normal(0, 0.5, 300)})
    fit = landscape.fit_surface(coords)
    residual = coords["pc3"] - _on_curve(pc1, fit)
    np.testing.assert_allclose(np.vander(pc1, 3).T @ residual, 0, atol=1e-9)


def test_fit_refuses_missing_pc3() -> None:
    with pytest.raises(ValueError, match="pca.n_components to 3"):
        landscape.fit_surface(pd.DataFrame({"pc1": [0.0, 1, 2], "pc2": [0.0, 1, 2]}))


def _basis(n_params: int = 40, rows: int = 4) -> np.ndarray:
    rng = np.random.default_rng(2)
    pcs, _ = np.linalg.qr(rng.normal(size=(n_params, rows - 1)))
    return np.vstack([rng.normal(size=n_params), pcs.T])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_grid_point_parameters_by_hand(kind: str) -> None:
    basis = _basis()
    mean, pc1, pc2, pc3 = basis
    a, b = 1.5, -2.0
    height = 0.25 * 1.5**2 - 0.7 * 1.5 + 0.3  # q(a) with Q's coefficients
    expected = mean + 1.5 * pc1 - 2.0 * pc2 + height * pc3
    given = basis if kind == "numpy" else torch.from_numpy(basis)
    got = np.asarray(landscape.point_parameters(given, a, b, Q))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the curved point sits q(a) along pc3 from the plane's point
    plane = np.asarray(landscape.point_parameters(given, a, b, Surface()))
    np.testing.assert_allclose((got - plane) @ pc3, height, atol=1e-12)


def test_plane_is_todays_grid_exactly() -> None:
    """q = 0 gives bit for bit mean + a*pc1 + b*pc2 and never reads a PC3 row."""
    mean, pc1, pc2 = basis = _basis(rows=3)
    got = landscape.point_parameters(basis, 0.7, 3.1, Surface())
    assert np.array_equal(got, mean + 0.7 * pc1 + 3.1 * pc2)
    assert landscape.surface_for({"surface": "plane"}, pd.DataFrame()) == Surface()


def _coords(pc1: np.ndarray, pc3: np.ndarray, off: np.ndarray | float = 0.0) -> pd.DataFrame:
    """Coordinates table rows: `off` is the part outside PC1-PC3 (distance_to_plane holds it)."""
    return pd.DataFrame({"path": "main", "branch_epoch": pd.NA, "epoch": np.arange(len(pc1)),
                         "pc1": pc1, "pc2": 1.0, "pc3": pc3,
                         "distance_to_plane": np.hypot(pc3, off)})


def test_distance_zero_on_surface_and_d_off_it() -> None:
    pc1 = np.linspace(-6, 6, 25)
    on = landscape.surface_table(_coords(pc1, _on_curve(pc1, Q)), Q)
    np.testing.assert_allclose(on[["pc3_residual", "distance_pc123", "distance"]], 0, atol=1e-12)
    assert (on[["q0", "q1", "q2"]].to_numpy() == [Q.q0, Q.q1, Q.q2]).all()

    d = 0.4
    moved = landscape.surface_table(_coords(pc1, _on_curve(pc1, Q) + d), Q)
    np.testing.assert_allclose(moved["pc3_residual"], d, atol=1e-12)  # height along PC3
    # at the vertex the surface is level: moving along PC3 moves d away from it
    vertex = -Q.q1 / (2 * Q.q2)
    for step in (d, -d):  # below the parabola for any d; above it for d < 1/(2 q2)
        at = landscape.surface_table(_coords(np.array([vertex]), _on_curve(vertex, Q) + step), Q)
        np.testing.assert_allclose(at["distance_pc123"], abs(step), atol=1e-12)
    # anywhere, moving along the surface's normal by d (inside the radius of curvature)
    slope = 2 * Q.q2 * pc1 + Q.q1
    normal = np.stack([-slope, np.ones_like(slope)]) / np.hypot(slope, 1)
    for step in (d, -d):
        x, y = np.array([pc1, _on_curve(pc1, Q)]) + step * normal
        np.testing.assert_allclose(landscape.surface_table(_coords(x, y), Q)["distance_pc123"],
                                   d, atol=1e-9)
    # far inside the bend the nearest points are off to both sides: the vertex is a stationary
    # point (a local maximum); for q2 = 1/4, 10 above the vertex: u^2 = 32 to a side, distance 6
    for bowl in (Q, Surface(q0=1.0, q2=0.25)):  # (no slope at 0: a start there stays there)
        top = -bowl.q1 / (2 * bowl.q2)
        inside = landscape.surface_table(_coords(np.array([top]), _on_curve(top, bowl) + 10), bowl)
        np.testing.assert_allclose(inside["distance_pc123"], 6.0, atol=1e-12)
    # the plane: distance is |pc3|
    flat = landscape.surface_table(_coords(pc1, np.full_like(pc1, -d)), Surface())
    np.testing.assert_allclose(flat["distance_pc123"], d, atol=1e-12)


@pytest.mark.parametrize("q2", [0.0, 1e-12, 1e-200])
def test_distance_from_a_tilted_nearly_flat_surface(q2: float) -> None:
    """A point d above a tilted line (slope 2) along PC3 is d / sqrt(5) from it, also where q2
    is too small for the cubic's roots (its leading coefficient 2 q2^2 underflows)."""
    pc1 = np.linspace(-20, 20, 9)
    tilted = Surface(q0=0.5, q1=2.0, q2=q2)
    got = landscape.distance_in_pc13(pc1, _on_curve(pc1, tilted) + 0.3, tilted)
    np.testing.assert_allclose(got, 0.3 / np.sqrt(5), rtol=0, atol=1e-9)


def test_distance_matches_brute_force_in_parameter_space() -> None:
    """Snapshots anywhere in parameter space: the table's distances equal the minimum over a
    dense sample of surface points, and the coordinates come from the real projection."""
    rng = np.random.default_rng(3)
    n_params = 12
    basis, _ = np.linalg.qr(rng.normal(size=(n_params, n_params)))
    mean, pcs = rng.normal(size=n_params), basis.T[:5]
    snapshots = mean + rng.normal(scale=[4, 3, 2, 1, 1, *[0.3] * 7], size=(30, n_params)) @ basis.T
    pca = PCAResult(mean, pcs, np.ones(5), np.ones(5) / 5)
    coords, to_plane = pca.project(snapshots)
    table = landscape.surface_table(
        _coords(coords[:, 0], coords[:, 2]).assign(distance_to_plane=to_plane), Q)

    a = np.linspace(-40, 40, 400_001)  # the nearest surface point has b = the snapshot's pc2
    for row, snapshot, c in zip(table.itertuples(), snapshots, coords, strict=True):
        dense = np.hypot(a - c[0], _on_curve(a, Q) - c[2]).min()
        assert row.distance_pc123 == pytest.approx(dense, abs=1e-6)
        best = a[np.argmin(np.hypot(a - c[0], _on_curve(a, Q) - c[2]))]
        nearest = mean + best * pcs[0] + c[1] * pcs[1] + _on_curve(best, Q) * pcs[2]
        assert row.distance == pytest.approx(np.linalg.norm(snapshot - nearest), abs=1e-6)


def test_curved_needs_three_components(tmp_path: Path) -> None:
    with pytest.raises(lrconfig.ConfigError, match=r"landscape\.surface = curved.*"
                                                   r"pca\.n_components to 3 or more"):
        load_tiny(tmp_path, landscape={"surface": "curved"}, pca={"n_components": 2})
    assert load_tiny(tmp_path, landscape={"surface": "curved"},
                     pca={"n_components": 3})["landscape"]["surface"] == "curved"
    assert load_tiny(tmp_path)["landscape"]["surface"] == "plane"  # the schema's default


@pytest.mark.parametrize("kind", ["plane", "curved"])
def test_figure2_notes_the_surface_and_the_distances(kind: str, tmp_path: Path) -> None:
    from lrdecay.analysis import figures

    epochs = np.arange(30)
    pc1 = epochs / 3.0
    vander = np.vander(pc1, 3)  # off the surface by a wiggle the quadratic fit cannot absorb
    wiggle = np.sin(epochs) - vander @ np.linalg.lstsq(vander, np.sin(epochs), rcond=None)[0]
    coords = _coords(pc1, _on_curve(pc1, Q) + 0.05 * wiggle, off=0.1)
    coords["pc2"] = np.cos(epochs / 5.0)
    surface = landscape.surface_table(coords, landscape.surface_for({"surface": kind}, coords))
    a, b = np.meshgrid(np.linspace(-1, 11, 9), np.linspace(-1.5, 1.5, 7))
    grid = pd.DataFrame({"pc1": a.ravel(), "pc2": b.ravel()})
    grid["train_loss"] = 0.1 + (grid["pc1"] - 5) ** 2 / 10 + grid["pc2"] ** 2
    variance = pd.DataFrame({"component": [1, 2, 3], "explained_variance_ratio": [0.6, 0.25, 0.1]})
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss", surface)
    ax = next(a for a in fig.axes if a.get_legend())  # below the zoom, or the landscape
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    off = surface["distance_pc123"]
    note = next(t for t in texts if "distance from it" in t)
    assert f"median {off.median():.3g}, max {off.max():.3g}" in note
    assert ("PC3 = 0.25a\u00b2 - 0.7a + 0.3" in note) == (kind == "curved")
    assert ("PC1-PC2 plane" in note) == (kind == "plane")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert fig.get_size_inches()[0] <= figures.COLUMN_WIDTH
    figures.save(fig, tmp_path / "f.png", tmp_path / "f.pdf")  # as saved: labels, bar, legend
    assert Image.open(tmp_path / "f.png").size[0] <= (figures.COLUMN_WIDTH + 0.05) * 300
