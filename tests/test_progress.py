"""Console progress (lrdecay.core.logs.Progress): a few lines per job with the whole job's estimate,
per-epoch detail only in the job's log file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from lrdecay.config import validate as lrconfig
from lrdecay.core import logs
from lrdecay.training import subpaths, train
from tests.conftest import engine_config, prepare_data


def test_progress_logs_every_tenth_and_estimates_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = iter(float(t) for t in range(1000))  # 1 s per call
    caplog.set_level(logging.INFO, logger="lrdecay")
    progress = logs.Progress("job", 200, "epochs", every_s=1e9, clock=lambda: next(clock))
    progress.skip(100)  # resumed: half done before this process
    for _ in range(100):
        progress.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5, lines  # 110, 130, ..., 200: one line per 10 % of the job (20 units)
    assert lines[0].startswith("job: 60 % (120 of 200 epochs)"), lines[0]
    # 20 units in 20 s since the start of this process: 80 left, about 80 s (resumed units
    # do not count towards the rate)
    assert re.search(r"about 80 s left", lines[0]), lines[0]
    assert lines[-1].endswith("done"), lines[-1]


def test_progress_logs_after_30_seconds_without_a_tenth(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = iter(float(10 * t) for t in range(1000))  # 10 s per call
    caplog.set_level(logging.INFO, logger="lrdecay")
    progress = logs.Progress("slow job", 1000, "epochs", clock=lambda: next(clock))
    for _ in range(9):
        progress.advance()
    # 9 of 1000 units (under 10 %), 90 s: one line every 30 s
    assert len(caplog.records) == 3, [r.getMessage() for r in caplog.records]


def test_jobs_write_epochs_to_their_log_and_a_few_lines_to_the_console(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A main segment of 20 epochs and a subpath group of 2 x 10 (one after another on the CPU):
    every epoch in the log file, at most 11 progress lines each on the console, whose estimate
    covers the whole job (the group's counts both subpaths' epochs)."""
    config = engine_config(tmp_path, schedule={
        "main_epochs": 20, "segment_epochs": 20, "first_branch_epoch": 10, "branch_interval": 5,
        "last_branch_epoch": 15, "subpath_epochs": 10, "subpaths_per_job": 2})
    plan = lrconfig.Plan(config)
    data = str(prepare_data(config))
    log_file = tmp_path / "job.log"
    logs.setup(log_file)
    try:
        for end in (0, 20):
            train.run_main_segment(config, data, end, str(plan.segment_dir(end)), "cpu")
        subpaths.run_subpath_group(config, data, 0, str(plan.group_dir(0)), "cpu")
    finally:
        logging.getLogger().handlers.clear()
    console = capsys.readouterr().err.splitlines()
    logged = log_file.read_text().splitlines()
    assert sum(" epoch " in line and "train loss" in line for line in logged) == 20 + 2 * 10
    assert not [line for line in console if "train loss" in line], console
    main = [line for line in console if "main epochs 0-20:" in line]
    group = [line for line in console if "subpath group 0 (branches 10, 15):" in line]
    assert 1 <= len(main) <= 11 and 1 <= len(group) <= 11, console
    assert "of 20 path-epochs" in group[0] and group[-1].endswith("done"), group
    assert "(active)" not in "\n".join(console) and "first active" not in "\n".join(console)
