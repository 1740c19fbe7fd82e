"""Cooldown shapes and warm-up (lrdecay.study.schedules): each step's lr equals its closed form, in
the closed forms themselves and as the engines apply it (one subpath at a time, K at once, the main
path), the metrics rows record it, bad schedules are refused before any job, and a run killed
mid-cooldown resumes to byte-identical outputs."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lrdecay.config import validate as lrconfig
from lrdecay.core.basics import ConfigError
from lrdecay.study import plan, schedules
from lrdecay.training import stacked
from tests.conftest import (
    REPO,
    assert_same_bytes,
    assert_same_outputs,
    engine_config,
    outputs,
    state_bytes,
    subprocess_env,
    train_all,
)
from tests.test_batched import assert_close_outputs

MAIN, SUB = 0.1, 0.01


def closed_form(shape: str, step: int, total: int) -> float:
    """The lr of cooldown update `step` of `total`, written out here apart from the package."""
    x = min((step + 1) / total, 1.0)
    left = {"linear": 1 - x, "cosine": (1 + math.cos(math.pi * x)) / 2,
            "sqrt": 1 - x ** 0.5, "square": 1 - x ** 2, "step": 0.0}[shape]
    return SUB + (MAIN - SUB) * left


# (shape, step, total) -> the value, worked by hand: x = (step + 1) / total
HAND = [
    ("linear", 4, 10, 0.055), ("cosine", 4, 10, 0.055), ("square", 4, 10, 0.0775),
    ("sqrt", 4, 10, 0.01 + 0.09 * (1 - math.sqrt(0.5))),  # 0.036360...
    ("linear", 0, 10, 0.091), ("square", 0, 10, 0.0991),
    ("cosine", 0, 10, 0.01 + 0.045 * (1 + math.cos(0.1 * math.pi))),  # 0.097797...
    ("sqrt", 0, 10, 0.01 + 0.09 * (1 - math.sqrt(0.1))),  # 0.071539...
    ("linear", 9, 10, SUB), ("sqrt", 25, 10, SUB), ("step", 0, 10, SUB),
]


@pytest.mark.parametrize(("shape", "step", "total", "value"), HAND)
def test_cooldown_lr_is_the_closed_form(shape: str, step: int, total: int, value: float) -> None:
    assert schedules.cooldown_lr(step, total, MAIN, SUB, shape) == pytest.approx(value, rel=1e-12)
    assert closed_form(shape, step, total) == pytest.approx(value, rel=1e-12)


def test_warmup_lr_is_linear_then_constant() -> None:
    assert [schedules.warmup_lr(s, 4, 0.2) for s in range(6)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.2, 0.2, 0.2], rel=1e-12)


def test_the_schema_lists_the_shapes_the_code_has() -> None:
    schema = lrconfig.load_schema()["properties"]["schedule"]["properties"]["decay"]
    assert schema["properties"]["shape"]["enum"] == list(schedules.COOLDOWN_SHAPES)


def cooldown_config(out: Path, shape: str, mode: str, **extra: dict) -> dict:
    """The engine tests' tiny config (200 images, batch 32: 7 steps an epoch) with a cooldown
    over 2 of the subpaths' 3 epochs (14 steps)."""
    schedule = {"decay": {"shape": shape, "epochs": 2}, **extra.pop("schedule", {})}
    return engine_config(out, schedule=schedule,
                         engine={"checkpoint_seconds": 0, "batched_subpaths": mode}, **extra)


def record_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The lr of every optimizer step from now on, as the engines apply it: torch.optim.SGD's
    group lr at each step (one model) and the lr passed to stacked.sgd_update (K at once)."""
    seen: list[float] = []
    step = torch.optim.SGD.step

    def sgd_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    update = stacked.sgd_update

    def stacked_update(params, grads, buffers, lr, momentum, weight_decay):
        seen.append(lr)
        return update(params, grads, buffers, lr, momentum, weight_decay)

    monkeypatch.setattr(torch.optim.SGD, "step", sgd_step)
    monkeypatch.setattr(stacked, "sgd_update", stacked_update)
    return seen


def subpath_rows(config: dict) -> pd.DataFrame:
    found = outputs(config)
    return pd.concat([v for k, v in found.items() if k.startswith("subpaths/")
                      and k.endswith(".csv")]).sort_values(["branch_epoch", "epoch"])


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt", "square"])
def test_each_step_of_a_cooldown_uses_the_closed_form_lr(tmp_path: Path, mode: str, shape: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Three subpaths of 3 epochs, cooldown over 2: steps 0-13 follow the shape, 14-20 are at
    the subpath lr, one subpath after another or the three at once; each metrics row records
    its epoch's last lr (the first row the first step's) and the epochs after decay count from
    the branch point."""
    config = cooldown_config(tmp_path, shape, mode)
    train_all(config, groups=False)  # the main path first: record only the subpaths' steps
    seen = record_lrs(monkeypatch)
    train_all(config)
    steps = schedules.steps_per_epoch(200, 32)
    assert steps == 7
    expected = [closed_form(shape, s, 2 * steps) for s in range(3 * steps)]
    per_path = 3 if mode == "sequential" else 1  # K at once: one update call for the three
    assert seen == pytest.approx(expected * per_path, rel=1e-12, abs=0)
    assert len(set(seen)) == 2 * steps  # 13 shaped values, then the subpath lr
    rows = subpath_rows(config)
    assert rows["epochs_after_decay"].tolist() == [0, 1, 2, 3] * 3
    at = [0, steps - 1, 2 * steps - 1, 3 * steps - 1]
    assert rows["lr"].tolist() == pytest.approx([expected[s] for s in at] * 3, rel=1e-12)


def test_k_at_once_equals_one_at_a_time_under_a_cooldown(tmp_path: Path) -> None:
    """The lr per step reaches the vmapped update as it reaches torch.optim.SGD: same weights
    (the tolerance of tests/test_batched.py, from vmap's reduction order)."""
    one = cooldown_config(tmp_path / "seq", "sqrt", "sequential")
    many = cooldown_config(tmp_path / "vmap", "sqrt", "vmap")
    train_all(one)
    train_all(many)
    assert_close_outputs(outputs(many), outputs(one))


def test_warmup_is_linear_per_step_across_segments(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up over 2 epochs (14 steps) with one epoch per main-path job: the second job goes on
    from step 7, then main_lr; the subpaths (step decay) see only the subpath lr."""
    config = engine_config(tmp_path, schedule={"warmup_epochs": 2, "segment_epochs": 1})
    seen = record_lrs(monkeypatch)
    train_all(config, groups=False)
    expected = [MAIN * min(s + 1, 14) / 14 for s in range(6 * 7)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    found = outputs(config)
    main = pd.concat([v for k, v in found.items() if k.startswith("main/")
                      and k.endswith(".csv")]).sort_values("epoch")
    assert main["lr"].tolist() == pytest.approx([MAIN / 14, MAIN / 2] + [MAIN] * 5, rel=1e-12)
    seen.clear()
    train_all(config)
    assert set(seen) == {SUB}


def test_step_shape_and_no_warmup_change_no_params_or_hash(tmp_path: Path) -> None:
    """At their defaults the new keys are in no stage's values or hash (old results stay), and
    set they change the subpaths' hash only (decay) or the main path's too (warm-up)."""
    base = engine_config(tmp_path)
    assert not {"schedule.decay", "schedule.warmup_epochs"} & set(plan.SUBPATHS.values(base))
    shaped = cooldown_config(tmp_path, "linear", "auto")
    assert plan.MAIN_PATH.hash(shaped) == plan.MAIN_PATH.hash(base)
    assert plan.SUBPATHS.hash(shaped) != plan.SUBPATHS.hash(base)
    assert "decay" not in plan.MAIN_PATH.narrow(shaped)["schedule"]
    warm = engine_config(tmp_path, schedule={"warmup_epochs": 1})
    assert plan.MAIN_PATH.hash(warm) != plan.MAIN_PATH.hash(base)


@pytest.mark.parametrize(("schedule", "message"), [
    ({"decay": {"shape": "exp", "epochs": 2}},
     r"schedule\.decay\.shape = 'exp': must be one of \['step', 'linear'"),
    ({"decay": {"shape": "linear", "epochs": 4}},
     r"schedule\.decay\.epochs = 4: the cooldown is longer than the subpath.*use at most 3"),
    ({"decay": {"shape": "sqrt"}}, r"schedule\.decay\.epochs = 0: a sqrt cooldown needs"),
    ({"decay": {"shape": "step", "epochs": 2}}, r"schedule\.decay\.epochs = 2: the step shape"),
    ({"warmup_epochs": 3},
     r"schedule\.warmup_epochs = 3: the warm-up runs past the first branch epoch.*at most 2"),
])
def test_bad_schedules_are_refused_naming_the_key_and_fix(tmp_path: Path, schedule: dict,
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        engine_config(tmp_path, schedule=schedule)


KILL_DRIVER = """
import json, os, signal, sys
from lrdecay.core import io
from tests.conftest import train_all
config, kill_at = json.loads(sys.argv[1])  # None or n: after the n-th subpath resume state
seen = [0]
def hook(moment, path):
    if moment == "after" and path.name == "resume.pt" and "subpath_group" in str(path):
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
io.commit_hook = hook
train_all(config)
print("done", seen[0], flush=True)
"""


def run_driver(config: dict, kill_at: int | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_DRIVER, json.dumps([config, kill_at])],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_kill_9_mid_cooldown_then_rerun_is_byte_identical(tmp_path: Path, mode: str) -> None:
    """Subpaths of 6 epochs with a linear cooldown over 4, after a 2-epoch warm-up: killed just
    after the second epoch's resume state (inside the cooldown), the rerun resumes there and
    ends with the uninterrupted run's arrays, tables and checkpoints, byte for byte."""
    sections = {"data": {"train_per_class": 40},
                "schedule": {"main_epochs": 8, "first_branch_epoch": 2, "branch_interval": 3,
                             "last_branch_epoch": 5, "subpath_epochs": 6, "segment_epochs": 4,
                             "warmup_epochs": 2, "decay": {"shape": "linear", "epochs": 4}},
                "engine": {"checkpoint_seconds": 0, "batched_subpaths": mode}}
    reference = engine_config(tmp_path / "reference", **sections)
    done = run_driver(reference, None)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
    reference_commits = int(done.stdout.split()[-1])
    killed = engine_config(tmp_path / "killed", **sections)
    proc = run_driver(killed, 2)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    resume = lrconfig.Plan(killed).resume_dir
    assert [p.name for p in resume.rglob("resume.pt")] == ["resume.pt"]  # stopped mid-subpath
    done = run_driver(killed, None)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
    commits = int(done.stdout.split()[-1])
    assert_same_outputs(outputs(killed), outputs(reference))
    assert_same_bytes(state_bytes(killed), state_bytes(reference))
    assert commits == reference_commits - 2  # resumed after epoch 2, did not start afresh
    rows = subpath_rows(reference)
    assert rows["lr"].nunique() > 2  # the run really went through a cooldown
