"""Interrupted runs: a cluster's SIGTERM to Snakemake at its time limit, and `dvc repro` stopped
mid-stage. The same command run again ends identical to an uninterrupted run (every table equal,
every array and checksum record byte for byte): nothing finished is lost or half-kept.

The moment of the signal is drawn from a fixed seed, after a named job has started, so a failure
can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lrdecay.config import validate as lrconfig

from .conftest import (
    REPO,
    TINY,
    assert_same_bytes,
    assert_same_outputs,
    checkout_env,
    edit_config_yaml,
    make_config_yaml_tiny,
    outputs,
    sh,
    state_bytes,
    working_tree_copy,
)

# The training part of the tiny study (Snakemake target under a workdir): every training job
# and the gathering.
TARGET = "results/tiny/seed-0/metrics.csv"
# The tiny preset's main path trains an epoch in milliseconds: long segments (about a second
# each) let the signal land inside a job's training, so that its rerun resumes a saved state.
LONG_SEGMENTS = {"schedule": {"main_epochs": 300, "segment_epochs": 150}}


def _configfile(workdir: Path) -> Path:
    """A copy of the tiny preset with LONG_SEGMENTS, writing under `workdir`/results."""
    config = yaml.safe_load(TINY.read_text())
    lrconfig._deep_update(config, {**LONG_SEGMENTS, "output_dir": str(workdir / "results")})
    path = workdir / "tiny-long.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _snakemake(workdir: Path, *extra: str) -> list[str]:
    """Snakemake on `workdir`'s config file (`_configfile`), on 2 cores."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(workdir / "tiny-long.yaml"), "--cores", "2", *extra]


def _config(workdir: Path) -> dict:
    config = lrconfig.load(workdir / "tiny-long.yaml")
    return lrconfig.for_seed(config, config["seeds"][0])


def _gathered(seed_dir: Path) -> tuple[pd.DataFrame, bytes]:
    """The gathered table and main-path trajectory of a seed."""
    return (pd.read_csv(seed_dir / "metrics.csv"),
            np.load(seed_dir / "trajectories" / "main.npy").tobytes())


def _interrupt(command: list[str], cwd: Path, folder: Path, started: str, seed: int, sig: int,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `command` in its own process group; once a file matching the glob `started` exists
    under `folder` (a job's first resume state: it is training), wait a seeded moment (0-0.2 s)
    and send `sig` to the whole group, as a cluster's time limit does to a job step. The
    finished process, which must have been stopped by the signal, not have ended first."""
    delay = random.Random(seed).uniform(0.0, 0.2)
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(folder.glob(started)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"ended before {started} appeared:\n{proc.communicate()[0]}"
    time.sleep(delay)
    assert proc.poll() is None, f"ended within {delay:.2f} s of {started}: signal too late"
    os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, f"rc 0 after the signal:\n{output[-3000:]}"
    return subprocess.CompletedProcess(command, proc.returncode, output)


def test_sigterm_to_snakemake_mid_run_then_rerun_is_identical(tmp_path: Path) -> None:
    """SIGTERM to Snakemake and its jobs while main segment 150 trains; the same command again
    resumes it and finishes the study: every table and array equals an uninterrupted run's."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    for workdir in (reference, run):
        workdir.mkdir()
        _configfile(workdir)
    done = subprocess.run(_snakemake(reference, str(reference / TARGET)), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seed_dir = lrconfig.Plan(_config(run)).seed_dir()
    stopped = _interrupt(_snakemake(run, str(run / TARGET)), run, seed_dir,
                         ".resume/main_segment-0150/*/resume.pt", seed=19, sig=signal.SIGTERM)
    assert not (seed_dir / "metrics.csv").exists(), "the gathering ran before the signal"
    again = subprocess.run(_snakemake(run, str(run / TARGET)), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, f"{stopped.stdout[-3000:]}\n---\n{again.stderr[-3000:]}"
    assert "resumed at epoch" in again.stdout + again.stderr, "the signal missed the training"
    assert_same_outputs(outputs(_config(run)), outputs(_config(reference)))
    assert_same_bytes(state_bytes(_config(run)), state_bytes(_config(reference)))
    (table, main), (want_table, want_main) = _gathered(seed_dir), _gathered(
        lrconfig.Plan(_config(reference)).seed_dir())
    pd.testing.assert_frame_equal(table, want_table, check_exact=True)
    assert main == want_main


def test_dvc_repro_interrupted_then_rerun_is_identical_and_clean(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) to `dvc repro` while a training stage runs; `dvc repro` again ends with
    `dvc status` clean and the training outputs equal to an uninterrupted Snakemake run's."""
    repo = tmp_path / "repo"
    working_tree_copy(repo)
    run = make_config_yaml_tiny(repo)  # relative to the repo: results/tiny
    edit_config_yaml(repo, LONG_SEGMENTS)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "python", "-m", "lrdecay.tooling.dvcgen")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "tiny study")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    target = max(s for s in stages if s.startswith("main_segment-0-"))  # the last segment
    seed_dir = repo / run / "seed-0"
    end = target.rsplit("-", 1)[1]
    stopped = _interrupt(["dvc", "repro", target], repo, seed_dir,
                         f".resume/main_segment-{end}/*/resume.pt", seed=19, sig=signal.SIGINT,
                         env=checkout_env(repo))
    again = sh(repo, "dvc", "repro", target)
    assert "Running stage" in again, f"nothing reran after the interrupt:\n{stopped.stdout}"
    assert "resumed at epoch" in again, "the signal missed the training"
    status = sh(repo, "dvc", "status", target)
    assert "up to date" in status, status

    # the same jobs, uninterrupted, through Snakemake from the same config.yaml
    reference = tmp_path / "reference"
    working_tree_copy(reference)
    make_config_yaml_tiny(reference)
    edit_config_yaml(reference, LONG_SEGMENTS)
    last = f"{run}/seed-0/main/segment-{end}"
    sh(reference, sys.executable, "-m", "snakemake", last, "--cores", "2")
    config = yaml.safe_load((repo / "config.yaml").read_text())
    for root in (repo, reference):
        assert (root / last).is_dir()
    ours, theirs = (lrconfig.for_seed(lrconfig.load(root / "config.yaml", overrides={
        "output_dir": str(root / config["output_dir"])}), 0) for root in (repo, reference))
    assert_same_outputs(outputs(ours), outputs(theirs))
    assert_same_bytes(state_bytes(ours), state_bytes(theirs))
