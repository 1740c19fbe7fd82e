"""optimizer.name: adamw (issue 24): stacked.adamw_update is torch.optim.AdamW's arithmetic, K at
once equals one at a time, AdamW's state survives branch checkpoints and a kill -9, and the keys
are validated before any job and leave SGD runs' params and hashes as they were."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from lrdecay.config import validate as lrconfig
from lrdecay.core.basics import ConfigError
from lrdecay.study import plan, schedules
from lrdecay.training import stacked, train
from tests.conftest import (
    assert_same_bytes,
    assert_same_outputs,
    engine_config,
    outputs,
    poison_branch_state,
    state_bytes,
    train_all,
)
from tests.test_batched import assert_close_outputs
from tests.test_schedules import cooldown_config, run_driver, subpath_rows

ADAMW = {"name": "adamw", "momentum": 0.0, "main_lr": 0.01, "subpath_lr": 0.001,
         "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05}


def small_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def grads_of(model: nn.Module, step: int, seed: int) -> list[torch.Tensor]:
    """The gradient of a small MSE loss on a batch drawn from (seed, step)."""
    g = torch.Generator().manual_seed(1000 * seed + step)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    model.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def test_adamw_update_is_torch_adamw_per_model_under_a_cooldown() -> None:
    """Three models that have taken 0, 3 and 8 AdamW steps (branches of different epochs: other
    bias corrections), then 6 steps under a sqrt cooldown's per-step lr, K at once through
    adamw_update and one at a time through torch.optim.AdamW, each fed its own gradients at its
    own weights. Measured difference on CPU: 0 (same ops in the same order), so equality."""
    betas, eps, wd = (0.8, 0.99), 1e-6, 0.05
    models = [small_mlp(seed) for seed in range(3)]
    opts = [torch.optim.AdamW(m.parameters(), lr=0.01, betas=betas, eps=eps, weight_decay=wd)
            for m in models]
    for j, (model, opt) in enumerate(zip(models, opts, strict=True)):
        for step in range([0, 3, 8][j]):  # the main path's steps before the branch
            for p, grad in zip(model.parameters(), grads_of(model, step, j), strict=True):
                p.grad = grad
            opt.step()
    names = [n for n, _ in models[0].named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach().clone() for m in models])
              for n in names}

    def moment(key: str) -> dict[str, torch.Tensor]:
        return {n: torch.stack([o.state[p][key].clone() if p in o.state
                                else torch.zeros_like(p)
                                for o, p in ((o, dict(m.named_parameters())[n])
                                             for o, m in zip(opts, models, strict=True))])
                for n in names}

    state = {"exp_avg": moment("exp_avg"), "exp_avg_sq": moment("exp_avg_sq"),
             "step": torch.tensor([0.0, 3.0, 8.0])}
    lrs = [schedules.cooldown_lr(s, 6, 0.01, 0.001, "sqrt") for s in range(6)]
    assert len(set(lrs)) == 6
    probe = small_mlp(0)
    for step, lr in enumerate(lrs):
        stacked_grads = {n: [] for n in names}
        for j, (model, opt) in enumerate(zip(models, opts, strict=True)):
            grads = grads_of(model, 100 + step, j)
            for p, grad in zip(model.parameters(), grads, strict=True):
                p.grad = grad
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            with torch.no_grad():  # the same gradient at the stacked copy of model j's weights
                for n, p in probe.named_parameters():
                    p.copy_(params[n][j])
            for n, grad in zip(names, grads_of(probe, 100 + step, j), strict=True):
                stacked_grads[n].append(grad)
        stacked.adamw_update(params, {n: torch.stack(v) for n, v in stacked_grads.items()},
                             state, lr, betas, eps, wd)
    for j, model in enumerate(models):
        for n, p in model.named_parameters():
            assert torch.equal(params[n][j], p.detach()), (j, n)
            assert torch.equal(state["exp_avg"][n][j], opts[j].state[p]["exp_avg"]), (j, n)
            assert torch.equal(state["exp_avg_sq"][n][j], opts[j].state[p]["exp_avg_sq"])
        assert float(state["step"][j]) == float(opts[j].state[p]["step"])
    moved = max((params[n][0] - small_mlp(0).state_dict()[n]).abs().max() for n in names)
    assert moved > 1e-3  # the test really moved the weights


def test_k_at_once_equals_one_at_a_time_with_adamw_and_a_cooldown(tmp_path: Path) -> None:
    """Whole runs: main path and subpaths under AdamW, a sqrt cooldown; the vmapped subpaths
    match one at a time within tests/test_batched.py's tolerance (vmap's reduction order)."""
    one = cooldown_config(tmp_path / "seq", "sqrt", "sequential", optimizer=ADAMW)
    many = cooldown_config(tmp_path / "vmap", "sqrt", "vmap", optimizer=ADAMW)
    train_all(one)
    train_all(many)
    found = outputs(many)
    assert_close_outputs(found, outputs(one))
    sgd = cooldown_config(tmp_path / "sgd", "sqrt", "vmap",
                          optimizer={k: v for k, v in ADAMW.items()
                                     if k not in {"name", "betas", "eps"}})
    train_all(sgd)
    other = outputs(sgd)
    assert any(k.endswith(".npy") and other[k] != found[k] for k in found)  # AdamW was used


def test_branches_carry_adamw_state_from_the_main_path(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The branches at epochs 2, 4, 6 (7 steps an epoch) start K at once from the main path's
    AdamW state in their checkpoints: the first stacked update counts steps 15, 29, 43 and
    starts from non-zero moments, not from a fresh optimizer."""
    config = cooldown_config(tmp_path, "sqrt", "vmap", optimizer=ADAMW)
    seen: list[tuple[list[float], float]] = []
    update = stacked.adamw_update

    def recording(params, grads, state, *args) -> None:
        if not seen:
            seen.append((state["step"].tolist(),
                         min(float(v.abs().sum()) for v in state["exp_avg_sq"].values())))
        update(params, grads, state, *args)

    monkeypatch.setattr(stacked, "adamw_update", recording)
    assert [len(g) for g in lrconfig.Plan(config).subpath_groups] == [3]
    train_all(config)
    ((steps, smallest),) = seen
    assert steps == [14.0, 28.0, 42.0]  # before the increment: the main path's step counts
    assert smallest > 0


@pytest.mark.parametrize(("optimizer", "message"), [
    ({"name": "adamw", "momentum": 0.0, "betas": [1.0, 0.9]},
     r"optimizer\.betas\.0 = 1\.0: must be < 1"),
    ({"name": "adamw", "momentum": 0.0, "betas": [0.9]},
     r"optimizer\.betas = \[0\.9\]: needs at least 2 items"),
    ({"name": "adamw", "momentum": 0.0, "eps": 0}, r"optimizer\.eps = 0: must be > 0"),
    ({"name": "adamw"}, r"optimizer\.momentum = 0\.9: it is SGD's.*set optimizer\.momentum: 0"),
    ({"betas": [0.8, 0.9]}, r"optimizer\.betas = \[0\.8, 0\.9\]: it is AdamW's.*name: adamw"),
    ({"eps": 1e-6}, r"optimizer\.eps = 1e-06: it is AdamW's"),
    ({"name": "adam"}, r"optimizer\.name"),
])
def test_bad_optimizer_keys_are_refused_naming_the_key(tmp_path: Path, optimizer: dict,
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        engine_config(tmp_path, optimizer=optimizer)


def test_sgd_defaults_change_no_params_or_hash(tmp_path: Path) -> None:
    """At their defaults the new keys are in no stage's values or hash (old results stay);
    AdamW changes the main path's hash (both paths train with it)."""
    base = engine_config(tmp_path)
    assert not {"optimizer.name", "optimizer.betas", "optimizer.eps"} & set(
        plan.SUBPATHS.values(base))
    explicit = engine_config(tmp_path, optimizer={"name": "sgd", "betas": [0.9, 0.999],
                                                  "eps": 1e-8})
    assert plan.SUBPATHS.values(explicit) == plan.SUBPATHS.values(base)
    assert plan.SUBPATHS.hash(explicit) == plan.SUBPATHS.hash(base)
    adamw = engine_config(tmp_path, optimizer=ADAMW)
    assert plan.MAIN_PATH.hash(adamw) != plan.MAIN_PATH.hash(
        engine_config(tmp_path, optimizer={**ADAMW, "name": "sgd", "betas": [0.9, 0.999],
                                           "eps": 1e-8}))
    narrowed = plan.MAIN_PATH.narrow(adamw)["optimizer"]
    assert narrowed["name"] == "adamw" and narrowed["betas"] == [0.8, 0.99]
    assert plan.MAIN_PATH.narrow(base)["optimizer"]["name"] == "sgd"  # put back at its default


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_kill_9_mid_subpath_with_adamw_then_rerun_is_byte_identical(tmp_path: Path,
                                                                    mode: str) -> None:
    """Killed just after a subpath's second resume state, the rerun resumes with AdamW's moments
    and step counts and ends with the uninterrupted run's bytes."""
    sections = {"optimizer": ADAMW,
                "schedule": {"decay": {"shape": "linear", "epochs": 3}},
                "engine": {"checkpoint_seconds": 0, "batched_subpaths": mode}}
    reference = engine_config(tmp_path / "reference", **sections)
    done = run_driver(reference, None)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
    killed = engine_config(tmp_path / "killed", **sections)
    proc = run_driver(killed, 2)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    done = run_driver(killed, None)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
    assert_same_outputs(outputs(killed), outputs(reference))
    assert_same_bytes(state_bytes(killed), state_bytes(reference))
    assert subpath_rows(reference)["lr"].nunique() > 2


def test_a_diverging_branch_leaves_the_others_adamw_state_in_place(tmp_path: Path) -> None:
    """Branch 4 of 3 at once diverges (NaN weights) and is dropped (StackedStepper.keep): the
    other two carry on with their own AdamW rows and end as in a run where none diverged."""
    sections = {"optimizer": ADAMW, "engine": {"checkpoint_seconds": 0,
                                               "batched_subpaths": "vmap"}}
    reference = engine_config(tmp_path / "reference", **sections)
    train_all(reference)
    config = engine_config(tmp_path / "poisoned", **sections)
    train_all(config, groups=False)
    poison_branch_state(config, 4)
    with pytest.raises(train.DivergenceError, match="branch-0004 diverged"):
        train_all(config)

    def finished(cfg: dict, branch: int) -> pd.DataFrame:
        work = lrconfig.Plan(cfg).resume_dir / "subpath_group-000" / plan.SUBPATHS.hash(cfg)
        return pd.read_csv(work / f"branch-{branch:04d}" / "metrics.csv")

    ref = pd.read_csv(lrconfig.Plan(reference).group_dir(0) / "metrics.csv")
    for branch in (2, 6):
        mine = finished(config, branch)
        theirs = ref[ref["branch_epoch"] == branch].reset_index(drop=True)
        assert len(theirs) >= 3 and len(mine) == len(theirs)
        pd.testing.assert_frame_equal(mine[theirs.columns.intersection(mine.columns)],
                                      theirs[theirs.columns.intersection(mine.columns)],
                                      rtol=1e-4, atol=1e-5, obj=f"branch {branch}")
