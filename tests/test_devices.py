"""The engine's promises on each device: CPU in CI, CUDA (marker `cuda`) on a GPU machine.

Every test runs on "cpu" and "cuda"; the CUDA case is skipped without a GPU and is run by
benchmarks/gpu_check.sh. Tolerances (relative to the largest |parameter|, and to the losses):
- CPU: 1e-5 between K at once and one at a time (different kernels: vmap's batched GEMMs),
  exact for a resumed run (same kernels, same order).
- CUDA: TOLERANCE["cuda"] for both, with the engine's defaults (TF32 on, cuDNN autotuning: a new
  process may pick other kernels), and accuracies within one test image. Each test prints the
  error it measured, so the device run's log records it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from tests.conftest import (
    REPO,
    conv_config,
    outputs,
    poison_branch_state,
    subprocess_env,
    train_all,
)

CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
])
DEVICES = ["cpu", CUDA]
TOLERANCE = {"cpu": 1e-5, "cuda": 2e-3}
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 2e-3}
ACCURACY_SLACK = {"cpu": 0.0, "cuda": 0.051}  # one of the 20 test images


def compare(a: dict, b: dict, tol: float, device: str) -> float:
    """Assert outputs `a` and `b` agree within `tol`; return the largest relative error."""
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            x, y = a[key], b[key]
            assert x[["path", "branch_epoch", "epoch", "lr"]].equals(
                y[["path", "branch_epoch", "epoch", "lr"]]), key
            for column in ("train_loss", "test_loss"):
                err = float((x[column] - y[column]).abs().max() / y[column].abs().max())
                worst = max(worst, err)
                assert err <= tol, f"{key} {column}: relative error {err:.2e} > {tol}"
            for column in ("train_acc", "test_acc"):  # one image may flip where logits tie
                diff = float((x[column] - y[column]).abs().max())
                assert diff <= ACCURACY_SLACK[device], f"{key} {column} differs by {diff}"
        else:
            x, y = np.frombuffer(a[key], np.float32), np.frombuffer(b[key], np.float32)
            err = float(np.abs(x - y).max() / np.abs(y).max())
            worst = max(worst, err)
            assert err <= tol, f"{key}: relative error {err:.2e} > {tol}"
    return worst


def config_on(path: Path, device: str, **engine: object) -> dict:
    """vgg_small (convolutions, channels_last) on CIFAR-shaped data, 3 subpaths in one group."""
    return conv_config(path, device=device, engine={"batched_subpaths": "vmap", **engine})


@pytest.mark.parametrize("device", DEVICES)
def test_k_at_once_equals_one_at_a_time(tmp_path: Path, device: str) -> None:
    at_once = config_on(tmp_path / "vmap", device)
    one_by_one = config_on(tmp_path / "seq", device, batched_subpaths="sequential")
    assert len(lrconfig.Plan(at_once).subpath_groups[0]) == 3
    train_all(at_once, device=device)
    train_all(one_by_one, device=device)
    err = compare(outputs(at_once), outputs(one_by_one), TOLERANCE[device], device)
    print(f"{device}: K at once vs one at a time, largest relative error {err:.2e}")


KILLER = """
import json, os, signal, sys
from lrdecay.core import io
from tests.conftest import train_all
config, device, part, nth = json.loads(sys.argv[1])
seen = [0]
def kill(moment, path):
    if moment == "after" and part in str(path) and path.name == "resume.pt":
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
io.commit_hook = kill
train_all(config, device=device)
"""


@pytest.mark.parametrize("device", DEVICES)
def test_killed_and_resumed_job_ends_as_an_uninterrupted_one(tmp_path: Path,
                                                             device: str) -> None:
    """kill -9 in the middle of the main path and of a K-at-once group, rerun, compare."""
    reference = config_on(tmp_path / "reference", device)
    train_all(reference, device=device)
    killed = config_on(tmp_path / "killed", device)
    env = subprocess_env()
    for part in ("main_segment-0002", "subpath_group-000"):  # after the 1st of 2 epochs
        args = json.dumps([killed, device, part, 1])
        proc = subprocess.run([sys.executable, "-c", KILLER, args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == -9, proc.stderr[-3000:]
    resume = lrconfig.Plan(killed).resume_dir
    assert list(resume.rglob("resume.pt"))
    train_all(killed, device=device)
    assert not [p for p in resume.rglob("*") if p.is_file()]
    err = compare(outputs(killed), outputs(reference), RESUME_TOLERANCE[device], device)
    print(f"{device}: killed and resumed vs uninterrupted, largest relative error {err:.2e}")


@pytest.mark.parametrize("device", DEVICES)
def test_nan_in_one_subpath_leaves_the_others_intact(tmp_path: Path, device: str) -> None:
    clean = config_on(tmp_path / "clean", device)
    train_all(clean, device=device)
    config = config_on(tmp_path / "poisoned", device)
    train_all(config, groups=False, device=device)
    poison_branch_state(config, 2)
    with pytest.raises(RuntimeError, match="branch-0002 diverged at epoch 3") as err:
        train_all(config, device=device)
    assert "branch-0001" not in str(err.value) and "branch-0003" not in str(err.value)
    work = lrconfig.Plan(config).resume_dir / "subpath_group-000" / lrconfig.SUBPATHS.hash(config)
    kept = {}
    for branch in (1, 3):  # the others finished: compare them with the clean run's
        folder = work / f"branch-{branch:04d}"
        kept[f"{branch}.npy"] = np.load(folder / "snapshots.npy").tobytes()
        kept[f"{branch}.csv"] = pd.read_csv(folder / "metrics.csv")
        assert np.isfinite(kept[f"{branch}.csv"]["train_loss"]).all()
    clean_out = outputs(clean)
    group = pd.read_csv(lrconfig.Plan(clean).group_dir(0) / "metrics.csv")
    want = {}
    for branch in (1, 3):
        want[f"{branch}.npy"] = clean_out[f"subpaths/group-000/branch-{branch:04d}.npy"]
        want[f"{branch}.csv"] = group[group["branch_epoch"] == branch].reset_index(drop=True)
    error = compare(kept, want, TOLERANCE[device], device)
    print(f"{device}: others beside a NaN subpath vs clean run, largest relative error "
          f"{error:.2e}")
