"""K subpaths trained at once in one process with torch.func (vmap over stacked weights).

A small model at batch 125 leaves a GPU idle: each step is kernel launches around microseconds of
arithmetic. Stacking K models' parameters and running one vmapped forward/backward per step turns
K launches into one (convolutions become grouped convolutions inside vmap's batching rules).

Each model keeps what it would have alone: its own weights, momentum buffers, generator (so the
same batch order and crops as when trained by `PathRun`) and dropout draws (vmap's
randomness="different"; these come from the process's global RNG, so with dropout > 0 the batched
and sequential runs are different, equally valid samples). SGD is the exact arithmetic of
torch.optim.SGD (weight decay added to the gradient, momentum buffer `m*b + d`, `p - lr*b`).

A model whose loss becomes NaN/inf is dropped from the stack at that epoch (its error kept), the
others finish, and the group raises at the end, as the sequential path does.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from lrdecay import io
from lrdecay.train import (
    METRIC_COLUMNS,
    STATE_FIX,
    PathSpec,
    Trainer,
    diverged,
    divergence_message,
    reopen_snapshots,
    snapshot_epochs,
)

log = logging.getLogger(__name__)

EVAL_IMAGES_PER_CALL = 16384  # models x images in one vmapped eval call (bounds activation memory)
STATE_NAME = "batched-state.pt"


def sgd_update(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
               buffers: dict[str, torch.Tensor] | None, lr: float, momentum: float,
               weight_decay: float) -> None:
    """One step of torch.optim.SGD (dampening 0, no Nesterov) on stacked tensors, in place.

    Same operations, in the same order, as SGD's single-tensor path, so each model's update is the
    one it would get alone; foreach ops make it a handful of kernels for all layers and models.
    """
    names = list(params)
    p = [params[k] for k in names]
    d = [grads[k] for k in names]
    if weight_decay != 0:
        d = torch._foreach_add(d, p, alpha=weight_decay)
    if momentum != 0:
        assert buffers is not None
        b = [buffers[k] for k in names]
        torch._foreach_mul_(b, momentum)
        torch._foreach_add_(b, d)
        d = b
    torch._foreach_add_(p, d, alpha=-lr)


class StackedModels:
    """Pure functions over K stacked parameter sets of one architecture."""

    def __init__(self, trainer: Trainer, model: nn.Module):
        self.trainer = trainer
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.buffers = dict(model.named_buffers())  # shared, not stacked (the models have none)
        loss_fn = trainer.loss

        def loss_of(params: dict, x: torch.Tensor, y: torch.Tensor):
            logits = functional_call(model, {**params, **self.buffers}, (x,))
            loss = loss_fn(logits.float(), y)
            return loss, (logits.detach().argmax(-1) == y).sum()

        # Per model: gradients, loss and correct count; dropout masks differ between models.
        self.grad_fn = vmap(grad_and_value(loss_of, has_aux=True), randomness="different")
        self.eval_fn = vmap(loss_of, in_dims=(0, None, None))
        if trainer.engine["compile"]:  # one graph for the K models' forward and backward
            self.grad_fn = torch.compile(self.grad_fn)

    def train_step(self, params: dict, x: torch.Tensor, y: torch.Tensor):
        self.model.train()
        with self.trainer._autocast():
            grads, (loss, hits) = self.grad_fn(params, x, y)
        return grads, loss.detach(), hits

    @torch.no_grad()
    def evaluate(self, params: dict, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) mean loss and accuracy of each model over a full pass (eval mode)."""
        self.model.eval()
        k = next(iter(params.values())).shape[0]
        chunk = min(self.trainer.eval_batch, max(1, EVAL_IMAGES_PER_CALL // k))
        data = self.trainer.data
        loss_sum = torch.zeros(k, device=self.trainer.device)
        correct = torch.zeros(k, device=self.trainer.device, dtype=torch.long)
        for start in range(0, len(labels), chunk):
            batch = labels[start : start + chunk]
            with self.trainer._autocast():
                loss, hits = self.eval_fn(params, data.to_float(images[start : start + chunk]),
                                          batch)
            loss_sum += loss * len(batch)
            correct += hits
        return loss_sum / len(labels), correct.float() / len(labels)

    def flat(self, params: dict) -> torch.Tensor:
        """(K, n_params) in named_parameters order, as `flat_parameters` gives for one model."""
        return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in self.names], dim=1)


class BatchedGroupRun:
    """Train subpaths `specs` (same length, different branch epochs) together, resumably.

    Outputs per branch in `works[i]`: snapshots.npy (+ sidecar) and, last, metrics.csv, exactly as
    `PathRun` writes them. State for a resume: `group_work/batched-state.pt`.
    """

    def __init__(self, trainer: Trainer, specs: list[PathSpec], length: int, works: list[Path],
                 initial: list[Path], group_work: Path):
        self.trainer, self.specs, self.length = trainer, specs, length
        self.works, self.initial, self.group_work = works, initial, group_work
        cfg = trainer.config
        self.every = cfg["trajectory"]["every_epochs"]
        opt = cfg["optimizer"]
        self.momentum, self.weight_decay = opt["momentum"], opt["weight_decay"]
        self.state_path = group_work / STATE_NAME

    def run(self) -> list[str]:
        """Train; return the divergence messages of the models that failed (others finished)."""
        trainer, device, cfg = self.trainer, self.trainer.device, self.trainer.config
        self.group_work.mkdir(parents=True, exist_ok=True)
        base = trainer.build_model()
        stacked = StackedModels(trainer, base)
        members = [s.branch_epoch for s in self.specs]
        snaps = {s.branch_epoch: snapshot_epochs(s.branch_epoch, s.branch_epoch + self.length,
                                                 self.every, True) for s in self.specs}
        n_params = sum(p.numel() for p in base.parameters())
        for work in self.works:
            work.mkdir(parents=True, exist_ok=True)

        generators = {}
        for spec in self.specs:
            generators[spec.branch_epoch] = torch.Generator(device=device)
            generators[spec.branch_epoch].manual_seed(cfg["seed"] * 7919 + spec.seed_offset)

        state = self._try_resume(members)
        dtype = cfg["trajectory"]["dtype"]
        memmaps: dict[int, np.memmap] = {}
        if state is not None:
            for b in state["active"]:
                array = reopen_snapshots(self._work(b) / "snapshots.npy",
                                         (len(snaps[b]), n_params), dtype)
                if array is None:
                    state, memmaps = None, {}
                    break
                memmaps[b] = array
        if state is not None:
            active, t, rows = state["active"], state["t"], state["rows"]
            failures = state["failures"]
            params, buffers = state["params"], state["momentum"]
            for b in active:
                generators[b].set_state(state["generators"][b])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            log.info("group %s: resumed at epoch +%d from %s", members, t, self.state_path)
        else:
            active, t, failures = list(members), 0, []
            params, buffers = self._load_initial(base)
            torch.manual_seed(cfg["seed"] * 7919 + self.specs[0].seed_offset)  # dropout stream
            for b in active:
                memmaps[b] = np.lib.format.open_memmap(
                    self._work(b) / "snapshots.npy", mode="w+", dtype=dtype,
                    shape=(len(snaps[b]), n_params))
            rows = {b: [] for b in active}
            values = self._evaluate(stacked, params, None)
            flat = stacked.flat(params).cpu().numpy()
            for i, b in enumerate(active):
                rows[b].append(trainer.make_row(self._spec(b), b, values[i], True))
                memmaps[b][0] = flat[i]

        last_save = time.monotonic()
        started, first_t = time.monotonic(), t
        while t < self.length and active:
            running = self._train_epoch(stacked, params, buffers, [generators[b] for b in active])
            t += 1
            values = self._evaluate(stacked, params, running)
            keep = []
            for i, b in enumerate(active):
                row = trainer.make_row(self._spec(b), b + t, values[i], trainer.full_pass)
                if diverged(row):
                    failures.append(divergence_message(self._spec(b), b + t, row, self._work(b)))
                    log.error("%s", failures[-1])
                    continue
                keep.append(i)
                rows[b].append(row)
            if len(keep) < len(active):  # drop diverged models; the others carry on unchanged
                index = torch.tensor(keep, device=device)
                params = {k: v.index_select(0, index) for k, v in params.items()}
                if buffers is not None:
                    buffers = {k: v.index_select(0, index) for k, v in buffers.items()}
                for i, b in enumerate(active):
                    if i not in keep:
                        del memmaps[b]
                active = [active[i] for i in keep]
            due = [b for b in active if b + t in snaps[b]]
            if due:
                flat = stacked.flat(params).cpu().numpy()
                for i, b in enumerate(active):
                    if b in due:
                        memmaps[b][snaps[b].index(b + t)] = flat[i]
            if time.monotonic() - last_save >= cfg["engine"]["checkpoint_seconds"]:
                self._save(memmaps, params, buffers, generators, active, members, t, rows,
                           failures)
                last_save = time.monotonic()
            _progress(members, active, t, first_t, self.length, started)
        self._save(memmaps, params, buffers, generators, active, members, t, rows, failures)
        for b in active:
            del memmaps[b]
            io.record_array(self._work(b) / "snapshots.npy", {
                "path": self._spec(b).name, "branch_epoch": b, "epochs": snaps[b],
                "config_hash": trainer.hash,
                "layout": "rows are flattened named_parameters at the listed epochs",
            })
            frame = pd.DataFrame(rows[b], columns=METRIC_COLUMNS)
            io.write_csv(self._work(b) / "metrics.csv", frame)  # last: marks the branch done
        self.state_path.unlink(missing_ok=True)
        saved_sidecar(self.group_work).unlink(missing_ok=True)
        return failures

    # -- pieces ------------------------------------------------------------------------------
    def _spec(self, branch: int) -> PathSpec:
        return next(s for s in self.specs if s.branch_epoch == branch)

    def _work(self, branch: int) -> Path:
        return self.works[[s.branch_epoch for s in self.specs].index(branch)]

    def _load_initial(self, base: nn.Module) -> tuple[dict, dict | None]:
        """Stack each branch's main-path weights and momentum buffers along a new dim 0."""
        per_model, per_buffer = [], []
        for path in self.initial:
            state = io.load_checkpoint(path, fix=STATE_FIX, map_location=self.trainer.device)
            base.load_state_dict(state["model"])
            optimizer = self.trainer.build_optimizer(base, self.specs[0].lr)
            optimizer.load_state_dict(state["optimizer"])
            named = dict(base.named_parameters())
            per_model.append({k: v.detach().clone() for k, v in named.items()})
            # A branch at epoch 0 has no buffer yet; zeros then give SGD's first step exactly.
            per_buffer.append({
                k: optimizer.state.get(v, {}).get("momentum_buffer", None)
                for k, v in named.items()
            })
        params = {k: torch.stack([m[k] for m in per_model]) for k in per_model[0]}
        if self.momentum == 0:
            return params, None
        buffers = {
            k: torch.stack([b[k].detach().clone() if b[k] is not None
                            else torch.zeros_like(params[k][0]) for b in per_buffer])
            for k in params
        }
        return params, buffers

    def _train_epoch(self, stacked: StackedModels, params: dict, buffers: dict | None,
                     generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch for all K models; (K,) mean loss and accuracy, left on the device."""
        trainer, data = self.trainer, self.trainer.data
        n, k = len(data.train_y), len(generators)
        drawn = [data.epoch_order(g) for g in generators]  # each model's own order and crops
        order = torch.stack([o for o, _ in drawn])  # (K, n)
        draws = None if drawn[0][1] is None else torch.stack([d for _, d in drawn], 1)  # (3,K,n)
        lr = self.specs[0].lr
        loss_sum = torch.zeros(k, device=trainer.device)
        correct = torch.zeros(k, device=trainer.device, dtype=torch.long)
        for start in range(0, n, trainer.batch_size):
            index = order[:, start : start + trainer.batch_size]  # (K, b)
            x = data.train_batch(
                index, None if draws is None else draws[:, :, start : start + trainer.batch_size])
            grads, loss, hits = stacked.train_step(params, x, data.train_y[index])
            sgd_update(params, grads, buffers, lr, self.momentum, self.weight_decay)
            loss_sum += loss * index.shape[1]  # on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def _evaluate(self, stacked: StackedModels, params: dict, running: tuple | None) -> list:
        """[[train_loss, train_acc, test_loss, test_acc] per model]: the one sync per epoch."""
        data = self.trainer.data
        test = stacked.evaluate(params, data.test_x, data.test_y)
        if self.trainer.full_pass or running is None:
            train = stacked.evaluate(params, data.train_x, data.train_y)
        else:
            train = running
        return torch.stack([train[0], train[1], test[0], test[1]], dim=1).tolist()

    def _save(self, memmaps: dict, params: dict, buffers: dict | None, generators: dict,
              active: list[int], members: list[int], t: int, rows: dict,
              failures: list[str]) -> None:
        for snapshots in memmaps.values():
            snapshots.flush()  # snapshot rows up to epoch t reach the disk before the state does
        device = self.trainer.device
        state = {
            "members": members, "active": active, "t": t, "params": params, "momentum": buffers,
            "generators": {b: generators[b].get_state() for b in active},
            "torch_rng": torch.get_rng_state(), "rows": rows, "failures": failures,
            "config_hash": self.trainer.hash,
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        # members in the sidecar: a rerun finishes this same set even if some outputs exist.
        io.save_checkpoint(self.state_path, state, meta={"members": members, "t": t})

    def _try_resume(self, members: list[int]) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            state = io.load_checkpoint(self.state_path, fix=STATE_FIX,
                                       map_location=self.trainer.device)
        except io.CorruptFileError as err:
            log.warning("ignoring unreadable resume state (%s); starting the group afresh", err)
            return None
        if state.get("config_hash") != self.trainer.hash or state.get("members") != members:
            log.warning("resume state %s is for another config or group; starting afresh",
                        self.state_path)
            return None
        if not all((self._work(b) / "snapshots.npy").exists() for b in state["active"]):
            log.warning("snapshot files of %s are missing; starting the group afresh",
                        self.state_path)
            return None
        return state


def saved_sidecar(group_work: Path) -> Path:
    return group_work / f"{STATE_NAME}.json"


def saved_members(group_work: Path) -> list[int] | None:
    """Branches of a saved batched state in `group_work` (None if there is none)."""
    try:
        return list(json.loads(saved_sidecar(group_work).read_text())["members"])
    except (OSError, ValueError, KeyError):
        return None


def _progress(members: list[int], active: list[int], t: int, first: int, length: int,
              started: float) -> None:
    done, elapsed = t - first, time.monotonic() - started
    eta = elapsed / done * (length - t) if done else float("nan")
    log.info("subpaths %s (%d active) epoch +%d/%d  %.1fs elapsed, ETA %.0fs",
             members, len(active), t, length, elapsed, eta)
