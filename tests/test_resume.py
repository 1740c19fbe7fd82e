"""kill -9 at random moments, rerun, and the outputs are bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrdecay import config as lrconfig
from lrdecay.train import STATE_NAME
from tests.test_train import assert_same_outputs, engine_config, outputs

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import json, sys
from tests.test_train import train_all
print("ready", flush=True)
train_all(json.loads(sys.argv[1]))
print("done", flush=True)
"""
SIZES = {  # enough epochs that a random kill usually lands inside training
    "data": {"train_per_class": 60},
    "model": {"hidden": [64, 64]},
    "schedule": {"main_epochs": 12, "first_branch_epoch": 3, "branch_interval": 3,
                 "last_branch_epoch": 9, "subpath_epochs": 6, "segment_epochs": 4,
                 "subpaths_per_job": 3},
}


def start(config: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                      os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(config: dict) -> None:
    proc = start(config)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "done" in out, err[-3000:]


def resume_states(config: dict) -> list[Path]:
    """State files of the jobs in progress (a kill while one exists lands inside training)."""
    resume = lrconfig.Plan(config).resume_dir
    return list(resume.rglob(STATE_NAME)) if resume.exists() else []


def kill_seed() -> int:
    """LRDECAY_TEST_SEED reruns a failure exactly; otherwise a fresh seed, printed."""
    return int(os.environ.get("LRDECAY_TEST_SEED", random.randrange(1 << 30)))


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_kill_9_at_random_moments_then_rerun_gives_identical_outputs(tmp_path: Path,
                                                                     mode: str) -> None:
    seed = kill_seed()
    rng = random.Random(seed)
    sections = {**SIZES, "engine": {"checkpoint_seconds": 0, "batched_subpaths": mode}}
    # The reference runs in a subprocess like the killed run: same thread count and process
    # state, so reductions happen in the same order (bit-identity holds per thread count).
    reference = engine_config(tmp_path / "reference", **sections)
    began = time.monotonic()
    run_to_end(reference)
    duration = time.monotonic() - began

    killed = engine_config(tmp_path / "killed", **sections)
    moments = []
    for attempt in range(3):
        proc = start(killed)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        began = time.monotonic()
        if attempt == 0:  # the first kill waits for a job's first saved state: always lands
            while not resume_states(killed) and proc.poll() is None:
                time.sleep(0.01)
        else:  # the others at random, within the first third of the run
            time.sleep(rng.uniform(0.05, 0.3) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            moments.append(round(time.monotonic() - began, 3))
        proc.communicate(timeout=300)
    how = f"seed {seed} (rerun with LRDECAY_TEST_SEED={seed}), kills at {moments} s"
    print(how)
    run_to_end(killed)
    assert moments, f"no kill landed: {how}"
    resume = lrconfig.Plan(killed).resume_dir
    leftovers = [p for p in resume.rglob("*") if p.is_file()] if resume.exists() else []
    assert not leftovers, f"resume files left after a finished run ({how}): {leftovers}"
    assert_same_outputs(outputs(killed), outputs(reference))
