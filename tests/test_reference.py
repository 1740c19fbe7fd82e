"""Packaging a finished run as a committed reference (lrdecay.analysis.reference, `lrdecay
reference`)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lrdecay.analysis import reference
from lrdecay.config.validate import config_hash
from lrdecay.tooling import cli
from tests.conftest import TINY, load_tiny


def _job_log(path: Path, seconds: float) -> None:
    """A job log ending as lrdecay.core.logs ends one, written by a real job process that spends
    `seconds` before it imports lrdecay (as a job importing torch does)."""
    code = (f"import time, sys; time.sleep({seconds}); from lrdecay.core import logs; "
            "logs.setup(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)


def _fake_run(run_dir: Path) -> None:
    files = {
        "claims.csv": "claim,verdict\nlater decay,supported\n",
        "seed-0/metrics.csv": "epoch,test_loss\n1,0.5\n",
        "figures/fig1a.png": "png",
        "figures/fig1a.pdf": "pdf",
        "summary.json": "{}",
        "seed-0/pca/basis.npy": "x",
        "seed-0/pca/basis.npy.json": "{}",  # record of a file a reference does not keep
        "seed-0/landscape/shard-000.csv": "point\n0\n",  # a piece of grid.csv
        "toy/gamma--0.5/checks.csv": "check\n",  # a piece of toy/checks.csv
        "seed-0/trajectories/main.npy": "x",
        "seed-0/main/segment-0002/state.pt.json": "{}",
        "data/dataset.pt.json": "{}",
        ".resume/main/x.json": "{}",
        "logs/pca.log": "job failed: RuntimeError\n",  # died before its end
    }
    for name, text in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    big = run_dir / "seed-0/landscape"
    (big / "grid.csv").write_bytes(b"0" * (reference.MAX_FILE_BYTES + 1))  # compresses well
    (big / "surface.csv").write_bytes(os.urandom(reference.MAX_FILE_BYTES + 1))  # does not


def test_stage_times_read_what_job_logs_write(tmp_path: Path) -> None:
    """The wall times come from real job logs, so a reworded end-of-job line fails here, and
    they count the time before the job set up its log (imports), which a clock started in
    logs.setup would miss."""
    _job_log(tmp_path / "logs/main_segment-0002.log", 0.3)
    _job_log(tmp_path / "logs/main_segment-0004.log", 0.0)
    (tmp_path / "logs/pca.log").write_text("no end line: the job died\n")
    stages = reference.stage_times(tmp_path)
    assert list(stages) == ["main_segment"]
    main = stages["main_segment"]
    assert main["jobs"] == 2
    assert 0.3 <= main["longest_s"] < 5 and main["wall_s"] >= main["longest_s"]
    assert main["peak_mb"] > 10  # a Python process with lrdecay imported


def test_package_keeps_results_only_and_records_provenance(tmp_path: Path) -> None:
    run_dir, dest = tmp_path / "run", tmp_path / "reference" / "authors"
    _fake_run(run_dir)
    (run_dir / "logs/main_segment-0002.log").write_text(
        "x INFO lrdecay: job ended after 12.5 s; peak memory 300 MB\n")
    (run_dir / "logs/toy_checks--0.5.log").write_text(  # a negative gamma in the job's name
        "x INFO lrdecay: job ended after 1.0 s; peak memory 100 MB\n")
    (run_dir / "seed-1/logs").mkdir(parents=True)
    (run_dir / "seed-1/logs/main_segment-0002.log").write_text(
        "x INFO lrdecay: job ended after 7.5 s; peak memory 500 MB\n")
    config = load_tiny(tmp_path)
    written = reference.package(config, run_dir, dest, "snakemake --cores 8", wall_s=20.0)

    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["claims.csv", "figures/fig1a.pdf", "figures/fig1a.png", "provenance.json",
                    "seed-0/landscape/grid.csv.gz", "seed-0/metrics.csv", "summary.json"]
    with gzip.open(dest / "seed-0/landscape/grid.csv.gz") as packed:
        assert packed.read() == (run_dir / "seed-0/landscape/grid.csv").read_bytes()
    record = json.loads(written.read_text())
    assert record["command"] == "snakemake --cores 8" and record["wall_s"] == 20.0
    assert record["config_hash"] == config_hash(config)
    assert record["stages"] == {"main_segment": {"jobs": 2, "wall_s": 20.0, "longest_s": 12.5,
                                                 "peak_mb": 500},
                                "toy_checks": {"jobs": 1, "wall_s": 1.0, "longest_s": 1.0,
                                               "peak_mb": 100}}
    assert record["files"] == [k for k in kept if k != "provenance.json"]
    assert len(record["left_out"]) == 1
    assert record["left_out"][0].startswith("seed-0/landscape/surface.csv.gz (")
    assert record["left_out"][0].endswith(f"> {reference.MAX_FILE_BYTES} even compressed)")
    assert record["torch"] and record["device"]
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", record["commit"])


def test_unfinished_run_leaves_the_old_reference_whole(tmp_path: Path) -> None:
    run_dir, dest = tmp_path / "run", tmp_path / "reference"
    _fake_run(run_dir)
    reference.package(load_tiny(tmp_path), run_dir, dest, "first")
    (run_dir / "claims.csv").unlink()
    with pytest.raises(FileNotFoundError, match="finish the run first"):
        reference.package(load_tiny(tmp_path), run_dir, dest, "second")
    assert json.loads((dest / "provenance.json").read_text())["command"] == "first"
    assert (dest / "claims.csv").exists()


def test_failure_while_packaging_leaves_the_old_reference_and_no_partial_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, dest = tmp_path / "run", tmp_path / "refs" / "authors"
    _fake_run(run_dir)
    reference.package(load_tiny(tmp_path), run_dir, dest, "first")

    def broken(*args: object) -> dict:
        raise RuntimeError("provenance failed")

    monkeypatch.setattr(reference, "provenance", broken)
    with pytest.raises(RuntimeError, match="provenance failed"):
        reference.package(load_tiny(tmp_path), run_dir, dest, "second")
    assert json.loads((dest / "provenance.json").read_text())["command"] == "first"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["authors"]


def test_reference_command_reports_an_unfinished_run(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["reference", str(TINY), "--set", f"output_dir={tmp_path}",
                     "--dest", str(tmp_path / "ref"), "--command", "x"])
    assert code == 2
    assert "finish the run first" in capsys.readouterr().err
    assert not (tmp_path / "ref").exists()
