"""`snakemake --report` is the study's front page: every figure and table of a run, with captions.

A tiny study is run in a copy of this checkout and its report built as a zip (easier to inspect
than the self-contained HTML); the test then checks that every figure (PNG) and every result
table (CSV) the DAG produces is in it, except the partial tables that a gather job combines.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.test_dvc import sh, tiny_config, working_tree_copy

# Pieces of a combined table (landscape shards -> grid.csv, per-gamma checks -> toy/checks.csv).
PARTIAL_TABLES = re.compile(r"/landscape/shard-\d+\.csv$|/toy/gamma-[^/]+/checks\.csv$")


@pytest.mark.slow
def test_report_has_every_figure_and_table(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    working_tree_copy(repo)
    tiny_config(repo)
    shutil.rmtree(repo / ".snakemake", ignore_errors=True)
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
