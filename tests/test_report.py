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

from lrdecay import analysis, figures, summary
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


def test_figure2_legend_off_the_contours_and_axes_give_the_variance() -> None:
    metrics, coords, grid, variance = _tables()
    fig = figures.landscape(grid, coords, variance, "train_loss", "train loss")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "PC1 (60.0 % of variance)"
    assert ax.get_ylabel() == "PC2 (25.0 % of variance)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer)), "legend sits on the contours"
    # subpaths are drawn above the main path, so they stay visible where the two coincide
    main = next(line for line in ax.lines if line.get_label().startswith("main path"))
    sub = next(line for line in ax.lines if line.get_label().startswith("subpaths"))
    assert sub.get_zorder() > main.get_zorder()
    assert fig.get_size_inches()[0] <= figures.COLUMN_WIDTH  # one column wide


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
