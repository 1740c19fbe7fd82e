"""`snakemake --report` is the study's front page: every figure and table of a run, with captions.

A tiny study is run in a copy of this checkout and its report built as a zip (easier to inspect
than the self-contained HTML); the test then checks that every figure (PNG) and every result
table (CSV) the DAG produces is in it, except the partial tables that a gather job combines.
"""

from __future__ import annotations

import hashlib
import re
import time
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lrdecay.analysis import claims as analysis
from lrdecay.analysis import figures, summary
from tests.conftest import make_config_yaml_tiny, sh, working_tree_copy

# Pieces of a combined table (landscape shards -> grid.csv, per-gamma checks -> toy/checks.csv).
PARTIAL_TABLES = re.compile(r"/landscape/shard-\d+\.csv$|/toy/gamma-[^/]+/checks\.csv$")


@pytest.mark.slow
def test_report_has_every_figure_and_table(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    working_tree_copy(repo)
    make_config_yaml_tiny(repo)
    sh(repo, "snakemake", "--cores", "2")
    listing = sh(repo, "snakemake", "--summary").splitlines()
    outputs = {line.split("\t")[0] for line in listing if line.startswith("results/")}
    expected = {
        out for out in outputs
        if out.endswith(".png") or (out.endswith(".csv") and not PARTIAL_TABLES.search(out))
    }
    assert expected, "the run produced no figures or tables"

    report = tmp_path / "report.zip"
    sh(repo, "snakemake", "--report", str(report))
    with zipfile.ZipFile(report) as archive:  # files are stored as data/raw/<hash>/<basename>
        names = archive.namelist()
        stored = {hashlib.sha256(archive.read(n)).hexdigest() for n in names}
        html = "".join(
            archive.read(n).decode(errors="replace") for n in names if n.endswith(".html")
        )
    missing = sorted(
        out for out in expected
        if hashlib.sha256((repo / out).read_bytes()).hexdigest() not in stored
    )
    assert not missing, (
        f"not in the report: {missing}; wrap each in report(..., caption=..., category=...)"
    )
    assert "Figure 1c of the paper" in html  # captions come with the figures
    assert "Reproduction of Ren" in html, (
        'no study description: the Snakefile needs `report: "workflow/report/workflow.rst"`'
    )


# --- figures fit for a paper (fast: synthetic tables) ------------------------------------------

def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """metrics, coordinates, grid and explained variance of a small made-up study."""
    rows = [{"path": "main", "branch_epoch": None, "epoch": e, "epochs_after_decay": None,
             "lr": 0.1, "train_loss": 1 / (e + 1), "test_loss": 1.2 / (e + 1) + 0.01,
             "train_acc": e / 31, "test_acc": e / 33, "train_metric": "full_pass"}
            for e in range(31)]
    rows += [{"path": "subpath", "branch_epoch": b, "epoch": b + k, "epochs_after_decay": k,
              "lr": 0.01, "train_loss": 0.5 / (b + k + 1), "test_loss": 0.7 / (b + k + 1) + 0.01,
              "train_acc": 0.9, "test_acc": 0.8, "train_metric": "full_pass"}
             for b in (10, 20, 30) for k in range(6)]
    metrics = pd.DataFrame(rows)
    coords = metrics[["path", "branch_epoch", "epoch"]].copy()
    coords["pc1"] = np.where(coords["path"] == "main", coords["epoch"] / 3.0,
                             coords["branch_epoch"].fillna(0) / 3 + 0.2)
    coords["pc2"] = np.sin(coords["epoch"] / 5.0)
    pc1, pc2 = np.meshgrid(np.linspace(-2, 12, 9), np.linspace(-1.5, 1.5, 7))
    grid = pd.DataFrame({"pc1": pc1.ravel(), "pc2": pc2.ravel()})
    grid["train_loss"] = 0.1 + (grid["pc1"] - 5) ** 2 / 10 + grid["pc2"] ** 2
    grid["test_loss"] = grid["train_loss"] * 1.1
    variance = pd.DataFrame({"component": [1, 2, 3], "explained_variance_ratio": [0.6, 0.25, 0.1]})
    return metrics, coords, grid, variance


def _figure2_axes(fig: plt.Figure) -> tuple[plt.Axes, plt.Axes, plt.Axes]:
    """Figure 2's main view, its zoom (gid "zoom") and its colour bar."""
    zoom = next(a for a in fig.axes if a.get_gid() == "zoom")
    bar = next(a for a in fig.axes if a is not zoom and a is not fig.axes[0])
    return fig.axes[0], zoom, bar


def test_figure2_legend_off_the_contours_and_axes_give_the_variance() -> None:
    metrics, coords, grid, variance = _tables()
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss")
    ax, zoom, bar = _figure2_axes(fig)
    assert ax.get_xlabel() == "PC1 (60.0 % of variance)"
    assert ax.get_ylabel() == "PC2 (25.0 % of variance)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = zoom.get_legend().get_window_extent(renderer)
    for axes in (ax, zoom, bar):  # nothing on the contours, the zoom or the colour bar
        assert not legend.overlaps(axes.get_window_extent(renderer)), "legend sits on a panel"
    # the zoom's title clears the main view's x label and tick labels
    assert not zoom.title.get_window_extent(renderer).overlaps(ax.get_tightbbox(renderer))
    # subpaths are drawn above the main path, so they stay visible where the two coincide
    main = next(line for line in ax.lines if line.get_label().startswith("main path"))
    sub = next(line for line in ax.lines if line.get_label().startswith("subpaths"))
    assert sub.get_zorder() > main.get_zorder()
    assert fig.get_size_inches()[0] <= figures.COLUMN_WIDTH  # one column wide


def _shown_branches(zoom: plt.Axes) -> list[int]:
    """The branch epochs the zoom's title names ("decayed at epochs 10, 20" or "10-30")."""
    named = zoom.get_title().split("decayed at epoch")[1].strip("s ()")
    if "-" in named:
        low, high = (int(x) for x in named.split("-"))
        return [low, high]
    return [int(x) for x in named.split(", ")]


def _long_subpaths() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Coordinates, grid, variance where each subpath moves as far as the branch points' spacing."""
    _, coords, grid, variance = _tables()
    sub = coords["path"] == "subpath"
    coords.loc[sub, "pc1"] += 0.1 * (coords.loc[sub, "epoch"] - coords.loc[sub, "branch_epoch"])
    return coords, grid, variance


def test_figure2_zoom_holds_every_subpath_when_they_can_be_seen() -> None:
    coords, grid, variance = _long_subpaths()
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss")
    ax, zoom, _ = _figure2_axes(fig)
    subs = coords[coords["path"] == "subpath"]
    assert zoom.get_title().endswith("all 3 subpaths (decayed at epochs 10, 20, 30)")
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    assert subs["pc1"].between(x0, x1).all() and subs["pc2"].between(y0, y1).all()
    # and tight around them (a 25 % margin), not around the main path or the whole view
    assert max(np.ptp(subs["pc1"]) / (x1 - x0), np.ptp(subs["pc2"]) / (y1 - y0)) >= 0.79
    # a true zoom: the main view's shape, outlined in the main view
    main_x, main_y = np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())
    assert (x1 - x0) / (y1 - y0) == pytest.approx(main_x / main_y)
    box = next(p for p in ax.patches if isinstance(p, plt.Rectangle))
    assert box.get_xy() == pytest.approx((x0, y0)) and box.get_width() == pytest.approx(x1 - x0)
    plt.close(fig)


def test_figure2_zoom_on_short_subpaths_shows_the_ones_it_names_large() -> None:
    """Subpaths that barely move (a small learning rate, few epochs): the zoom takes the latest
    ones the main path goes on from, each at least ZOOM_MIN_SHARE of the box, and says so."""
    _, coords, grid, variance = _tables()
    sub = coords["path"] == "subpath"
    coords.loc[sub, "pc2"] = (np.sin(coords.loc[sub, "branch_epoch"] / 5.0)
                              + 1e-3 * (coords.loc[sub, "epoch"] - coords.loc[sub, "branch_epoch"]))
    fig = figures.landscape(grid, coords, variance, "test_loss", "test loss")
    _, zoom, _ = _figure2_axes(fig)
    shown = _shown_branches(zoom)
    assert "of 3 subpaths" in zoom.get_title() and shown == [20]  # main goes on from 20, not 30
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    path = coords[sub & coords["branch_epoch"].isin(shown)]
    assert path["pc1"].between(x0, x1).all() and path["pc2"].between(y0, y1).all()
    assert np.ptp(path["pc2"]) / (y1 - y0) >= figures.ZOOM_MIN_SHARE
    plt.close(fig)


def test_figure2_colours_are_the_papers_caption() -> None:
    """Main path orange, subpaths blue dashed, a red star at the end of the longest trajectory,
    in the main view and the zoom alike."""
    metrics, coords, grid, variance = _tables()
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss")
    ax, zoom, _ = _figure2_axes(fig)
    for axes in (ax, zoom):
        lines = {line.get_label(): line for line in axes.lines}
        main = next(v for k, v in lines.items() if k.startswith("main path"))
        sub = next(v for k, v in lines.items() if k.startswith("subpaths"))
        star = next(v for k, v in lines.items() if k.startswith("end of longest"))
        assert main.get_color() == figures.ORANGE and main.get_linestyle() == "-"
        assert sub.get_color() == figures.BLUE and sub.get_linestyle() == "--"
        assert star.get_marker() == "*" and star.get_markerfacecolor() == figures.RED
    plt.close(fig)


@pytest.mark.parametrize("low, high", [(0.00407, 0.00634), (0.342, 122.0), (0.2, 1.2),
                                       (1e-5, 3e-5), (0.05, 40.0), (3e-4, 2.0)])
def test_colour_bar_ticks_are_round_numbers(low: float, high: float) -> None:
    ticks = figures.colorbar_ticks(low, high)
    assert 3 <= len(ticks) <= 8 and all(low <= t <= high for t in ticks), ticks
    for t in ticks:  # at most two significant digits
        assert float(f"{t:.2g}") == pytest.approx(t, rel=1e-9), ticks


def test_figure2_colour_bar_labels_are_the_round_ticks() -> None:
    metrics, coords, grid, variance = _tables()
    grid["train_loss"] = 0.00407 + 0.00227 * grid["train_loss"] / grid["train_loss"].max()
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss")
    _, _, bar = _figure2_axes(fig)
    fig.canvas.draw()
    labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3, labels
    assert all(len(label.replace("0.", "").lstrip("0")) <= 2 for label in labels), labels
    plt.close(fig)


def test_figures_are_one_column_wide_and_use_mathtext() -> None:
    metrics, _, _, _ = _tables()
    timing = analysis.aggregate_decay_timing({0: analysis.decay_timing_table(metrics)})
    for fig in (figures.learning_curves(metrics),
                figures.subpath_contour(metrics, "test_loss", "test loss"),
                figures.decay_timing(timing)):
        assert fig.get_size_inches()[0] <= figures.COLUMN_WIDTH
        texts = [ax.get_title() + ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes]
        assert any("$" in text for text in texts), texts  # symbols typeset, not spelt out
        assert all(not ax.get_legend() or ax.get_legend().get_texts()[0].get_fontsize() >= 6
                   for ax in fig.axes)
        plt.close(fig)


def test_pdfs_are_byte_stable(tmp_path: Path, monkeypatch) -> None:
    """DVC hashes figures: a rerun that only redraws them must not look like a change."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    metrics, _, _, _ = _tables()
    digests = []
    for i in range(2):
        figures.save(figures.learning_curves(metrics), tmp_path / f"{i}.png", tmp_path / f"{i}.pdf")
        digests.append({ext: (tmp_path / f"{i}.{ext}").read_bytes() for ext in ("png", "pdf")})
        time.sleep(1.1)  # a creation date in seconds would differ
    assert digests[0] == digests[1]


def test_summary_metrics_carry_the_tables_numbers() -> None:
    """summary.json (DVC metrics) repeats the tables' headline values, NaN as null."""
    metrics, _, _, variance = _tables()
    timing = analysis.decay_timing_table(metrics)
    checks = pd.DataFrame({"gamma": [0.5, 2.0], "check": ["a", "a"], "measured": [1.0, np.nan],
                           "pass": [True, False]})
    claims = pd.DataFrame({"claim": ["x", "y"], "value": [-0.5, np.nan],
                           "verdict": ["supported", "contradicted"]})
    out = summary.summarise(timing, variance, checks, claims)
    assert out["claims"] == {"x": {"value": -0.5, "verdict": 1},
                             "y": {"value": None, "verdict": -1}}
    row = timing.set_index("branch_epoch").loc[20]
    assert out["decay_timing"]["decay_at_0020"]["subpath_final_test_loss"] == pytest.approx(
        row["subpath_final_test_loss"])
    assert out["pca"]["pc1_pc2_variance_ratio"] == pytest.approx(0.85)
    assert out["toy_checks"]["passed"] == 1 and out["toy_checks"]["failed"] == 1
    assert out["toy_checks"]["a@gamma=2"] == {"measured": None, "pass": 0}


def test_figure1_contour_colour_bars_are_round_ticks() -> None:
    """Figures 1b/1c use the same round ticks as Figure 2 (not %.3g at contour levels)."""
    metrics, _, _, _ = _tables()
    sub = metrics["path"] == "subpath"
    for column in ("train_loss", "test_loss"):
        metrics.loc[sub, column] = 0.00407 + 0.00227 * metrics.loc[sub, column] / \
            metrics.loc[sub, column].max()
        fig = figures.subpath_contour(metrics, column, column.replace("_", " "))
        fig.canvas.draw()
        bar = fig.axes[-1]
        labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
        assert len(labels) >= 3, labels
        assert all(len(label.replace("0.", "").lstrip("0")) <= 2 for label in labels), labels
        plt.close(fig)


def _mechanism_bands(seeds: int = 3) -> tuple[pd.DataFrame, list[int]]:
    """norm_sharpness.csv of `seeds` made-up runs of _tables(): the norm falls along the main
    path; the subpaths' ends are flatter for later decay."""
    metrics, sharpness = {}, {}
    for s in range(seeds):
        m = _tables()[0]
        m["param_norm"] = 40 - m["epoch"] / 2 + s
        branches = sorted(int(b) for b in m["branch_epoch"].dropna().unique())
        sharpness[s] = pd.DataFrame(
            [{"point": "branch", "branch_epoch": b, "epoch": b, "top_eigenvalue": 30 + s}
             for b in branches]
            + [{"point": "subpath_end", "branch_epoch": b, "epoch": b + 5,
                "top_eigenvalue": 60 - b + s} for b in branches])
        metrics[s] = m
    return analysis.mechanism_bands(metrics, sharpness), branches


def test_mechanism_figure_draws_each_quantity_with_its_band_and_marks_the_branches() -> None:
    bands, branches = _mechanism_bands()
    fig = figures.mechanism(bands)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(analysis.MECHANISM_QUANTITIES) | {"branch_points"} <= set(lines)
    for quantity in analysis.MECHANISM_QUANTITIES:  # each line is the table's seed mean
        rows = bands[bands["quantity"] == quantity].sort_values("x")
        np.testing.assert_allclose(lines[quantity].get_ydata(), rows["mean"])
    np.testing.assert_allclose(lines["branch_points"].get_xdata(), branches)
    top, middle, bottom = fig.axes[:3]
    assert lines["main_norm"] in top.get_lines() and lines["final_norm"] in middle.get_lines()
    assert lines["final_sharpness"] in bottom.get_lines()
    assert all(ax.collections for ax in (top, middle, bottom))  # seed bands
    assert "3 seeds" in top.get_title()
    assert fig.get_size_inches()[0] <= figures.COLUMN_WIDTH
    labels = [t.get_text() for ax in (top, middle) for t in ax.get_legend().get_texts()]
    assert bottom.get_legend() is None  # its lines are the middle panel's (legend: there)
    assert "at the subpath's end" in labels and "main path" in labels
    plt.close(fig)
