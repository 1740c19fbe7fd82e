"""Toy figures in the paper style (labelled colour bars, mathtext, column width, byte-stable PDFs)
and the toy jobs' memory requests against the memory they really use."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from lrdecay.analysis.figures import COLUMN_WIDTH
from lrdecay.config import resources
from lrdecay.config import validate as lrconfig
from lrdecay.toy import figures
from tests.conftest import REPO, TINY


@pytest.fixture
def drawn(monkeypatch) -> list[plt.Figure]:
    """The figures the toy plotting functions hand to save (kept open for inspection)."""
    kept: list[plt.Figure] = []
    monkeypatch.setattr(figures, "save", lambda fig, png, pdf: kept.append(fig))
    yield kept
    for fig in kept:
        plt.close(fig)


def test_figure3_colour_bars_are_named_and_it_fits_the_page(drawn, tmp_path) -> None:
    figures.figure3(tmp_path / "f.png", tmp_path / "f.pdf", points=21)
    fig = drawn[0]
    width, _ = fig.get_size_inches()
    assert width <= figures.PAGE_WIDTH + 1e-9
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert sorted(ax.get_ylabel() for ax in bars) == ["test loss", "train loss"]
    text = [t.get_text() for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    text.append(fig.get_suptitle())
    assert "$w^*" in " ".join(text)
    assert not any("w*" in t or "w_dagger" in t or "gamma" in t for t in text), text


def test_one_panel_figures_are_one_column_wide_with_mathtext(drawn, tmp_path) -> None:
    t = [0.0, 1.0, 2.0]
    tr = {"main_t": t, "main_train_mean": [1.0, 0.5, 0.4], "main_floor_mean": [0.3, 0.3, 0.3],
          "main_test_mean": [2.0, 1.0, 0.9], "test_loss_dagger": 0.8, "k1": 1, "eta": 1.0,
          "decay_t": t}
    for key, _, _, _, _ in figures.DECAY_STARTS:
        tr.update({f"decay_{key}_mean": [1.0, 0.9, 0.85], f"decay_{key}_se": [0.1, 0.1, 0.1],
                   f"decay_{key}_pred": [1.0, 0.88, 0.86]})
    figures.phases(tmp_path / "p.png", tmp_path / "p.pdf", {2.0: tr})
    figures.late_decay(tmp_path / "l.png", tmp_path / "l.pdf", {2.0: tr})
    expected = (r"test loss at $w^\dagger$", "$c > 0$: predicted")
    for fig, want in zip(drawn, expected, strict=True):
        assert fig.get_size_inches()[0] == pytest.approx(COLUMN_WIDTH)
        ax = fig.axes[0]
        assert ax.get_title() == r"$\gamma = 2$"
        labels = ax.get_legend_handles_labels()[1]
        assert want in labels, labels
        assert not any("w_dagger" in s or "eta" in s.replace(r"\eta", "") for s in labels)
        assert fig.legends, "the legend sits below the panels (fig.legend), clear of the curves"


def test_toy_pdfs_are_byte_stable(tmp_path) -> None:
    pdfs = []
    for run in ("a", "b"):
        figures.figure3(tmp_path / f"{run}.png", tmp_path / f"{run}.pdf", points=21)
        pdfs.append((tmp_path / f"{run}.pdf").read_bytes())
    assert pdfs[0] == pdfs[1]
    assert b"CreationDate" not in pdfs[0]


def toy_config(**toy: object) -> dict:
    return lrconfig.load(REPO / "config.yaml", TINY, overrides={"toy": toy} if toy else None)


def test_toy_requests_follow_the_config_and_grow_on_retry() -> None:
    base = toy_config()
    for rule in ("toy_checks", "toy_table", "toy_figure3", "toy_figures"):
        assert resources.toy_mem_mb(base, rule, 2) == 2 * resources.toy_mem_mb(base, rule)
        assert resources.toy_runtime(rule, 2) == 2 * resources.toy_runtime(rule)
    many = toy_config(replicas=20000, mixing_replicas=20000)
    assert resources.toy_mem_mb(many, "toy_checks") > resources.toy_mem_mb(base, "toy_checks")
    fine = toy_config(grid_points=3001)
    assert resources.toy_mem_mb(fine, "toy_figure3") > resources.toy_mem_mb(base, "toy_figure3")


PEAK_SCRIPT = """
import json, sys
from lrdecay.config import validate as config
from lrdecay.core import logs
from lrdecay.toy.pipeline import run_checks
cfg = config.load(*sys.argv[2:4])
run_checks(cfg["toy"], 2.0, *(f"{sys.argv[1]}/{n}" for n in ("i.npz", "c.csv", "t.npz")))
print(json.dumps({"peak": logs.peak_memory_mb()}))
"""


def test_toy_checks_request_covers_its_measured_peak(tmp_path) -> None:
    """toy_checks on the tiny preset, in a fresh process (peak RSS is per process)."""
    files = [str(REPO / "config.yaml"), str(TINY)]
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path), *files],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=300)
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    requested = resources.toy_mem_mb(toy_config(), "toy_checks")
    assert peak < requested < 2.5 * peak, (peak, requested)
