"""kill -9 at seeded moments, rerun, and the outputs are bit-identical to an uninterrupted run.

Two kills land at seeded file commits (just before or just after the n-th rename of a written
file onto its final path), so they land on any machine and a failure reruns exactly; a third lands
at a seeded wall-clock moment, anywhere (mid-write, mid-epoch), and may find the run finished.
Arrays and tables are compared by value, checkpoints and checksum records byte for byte.
"""

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

from lrdecay.config import validate as lrconfig
from tests.conftest import (
    REPO,
    assert_same_bytes,
    assert_same_outputs,
    engine_config,
    outputs,
    state_bytes,
    subprocess_env,
)

DRIVER = """
import json, os, signal, sys
from lrdecay.core import io
from tests.conftest import train_all
config, kill_at = json.loads(sys.argv[1])  # kill_at: None or [moment, n]: at the n-th such commit
seen = {"before": 0, "after": 0}
def hook(moment, path):
    seen[moment] += 1
    if kill_at and kill_at == [moment, seen[moment]]:
        os.kill(os.getpid(), signal.SIGKILL)
io.commit_hook = hook
print("ready", flush=True)
train_all(config)
print("done", seen["after"], flush=True)
"""
SIZES = {  # enough epochs that a random kill usually lands inside training
    "data": {"train_per_class": 60},
    "model": {"hidden": [64, 64]},
    "schedule": {"main_epochs": 12, "first_branch_epoch": 3, "branch_interval": 3,
                 "last_branch_epoch": 9, "subpath_epochs": 6, "segment_epochs": 4,
                 "subpaths_per_job": 3},
}


def start(config: dict, kill_at: tuple[str, int] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps([config, kill_at])],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_to_end(config: dict) -> int:
    """Run every job of `config` uninterrupted; the number of files it committed."""
    proc = start(config)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "done" in out, err[-3000:]
    return int(out.split()[-1])


def kill_seed() -> int:
    """LRDECAY_TEST_SEED picks other kill moments (and reruns a failure printed with it)."""
    return int(os.environ.get("LRDECAY_TEST_SEED", "0"))


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_kill_9_at_seeded_moments_then_rerun_gives_identical_outputs(tmp_path: Path,
                                                                     mode: str) -> None:
    seed = kill_seed()
    rng = random.Random(seed)
    sections = {**SIZES, "engine": {"checkpoint_seconds": 0, "batched_subpaths": mode}}
    # The reference runs in a subprocess like the killed run: same thread count and process
    # state, so reductions happen in the same order (bit-identity holds per thread count).
    reference = engine_config(tmp_path / "reference", **sections)
    began = time.monotonic()
    commits = run_to_end(reference)
    duration = time.monotonic() - began

    # Each commit kill within the first third of the commits: the rerun still has them ahead.
    kills = [(rng.choice(["before", "after"]), rng.randint(1, commits // 3)) for _ in range(2)]
    pause = rng.uniform(0.05, 0.3) * duration
    how = f"seed {seed} (rerun with LRDECAY_TEST_SEED={seed}): kills at commits {kills}"
    killed = engine_config(tmp_path / "killed", **sections)
    for kill_at in kills:
        proc = start(killed, kill_at)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"kill at {kill_at} missed, {how}\n{err}"
    proc = start(killed)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(pause)
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    how += f", then at {pause:.3f} s ({'landed' if landed else 'run had finished'})"
    print(how)
    run_to_end(killed)
    resume = lrconfig.Plan(killed).resume_dir
    leftovers = [p for p in resume.rglob("*") if p.is_file()] if resume.exists() else []
    assert not leftovers, f"resume files left after a finished run ({how}): {leftovers}"
    assert_same_outputs(outputs(killed), outputs(reference))
    # and byte for byte: every state.pt, branch state and record, as DVC hashes them
    assert_same_bytes(state_bytes(killed), state_bytes(reference))
