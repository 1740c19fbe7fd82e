"""Training: main-path segments and subpath groups, resumable after a kill at any moment.

A path's whole state (weights, optimiser buffers, every RNG, epoch, metrics so far) is one
dict saved atomically in <run>/.resume/, which is never a Snakemake output, so Snakemake's cleanup
of a failed job cannot delete it. Snapshots are written row by row into a preallocated .npy there.
On CPU a resumed run gives bit-identical outputs to an uninterrupted one.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lrdecay import io, models
from lrdecay.config import Plan, training_hash
from lrdecay.data import DeviceData

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "path", "branch_epoch", "epoch", "epochs_after_decay", "lr",
    "train_loss", "train_acc", "test_loss", "test_acc", "train_metric",
]
STATE_FIX = "delete it and rerun the job that writes it (snakemake --forcerun <rule>)"


class DivergenceError(RuntimeError):
    """A path's loss became NaN or infinite."""


@dataclass
class PathSpec:
    """One training path: the main path or the subpath branching at `branch_epoch`."""

    name: str  # "main" or "branch-0200"
    branch_epoch: int | None
    lr: float

    @property
    def seed_offset(self) -> int:
        return 0 if self.branch_epoch is None else 1_000_003 + self.branch_epoch


def main_spec(config: dict) -> PathSpec:
    return PathSpec("main", None, config["optimizer"]["main_lr"])


def branch_spec(config: dict, branch_epoch: int) -> PathSpec:
    return PathSpec(f"branch-{branch_epoch:04d}", branch_epoch, config["optimizer"]["subpath_lr"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device: cuda, but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


def configure_backend(engine: dict, device: torch.device, threads: int | None) -> None:
    """Apply the engine's speed settings; each is a no-op where it does not apply."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = engine["tf32"]
        torch.backends.cudnn.allow_tf32 = engine["tf32"]
        torch.backends.cudnn.benchmark = engine["cudnn_benchmark"]


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch-mean loss; 'mse' is the authors' 0.5 * sum of squares against one-hot labels."""
    if name == "cross_entropy":
        return F.cross_entropy

    def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(logits.shape[-1], device=logits.device)
        target = (labels[..., None] == classes).to(logits.dtype)  # one-hot, vmap-safe (no .max())
        return 0.5 * (logits - target).pow(2).sum(-1).mean()

    return mse


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """(n_params,) float32 copy of the parameters in named_parameters order."""
    # reshape, not view: channels_last conv weights are not contiguous in NCHW order.
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class Trainer:
    """The model-independent parts of training shared by every path of a run."""

    def __init__(self, config: dict, data: DeviceData, device: torch.device):
        self.config = config
        self.data = data
        self.device = device
        self.loss = loss_function(config["loss"])
        self.batch_size = config["optimizer"]["batch_size"]
        self.eval_batch = config["metrics"]["eval_batch_size"]
        self.full_pass = config["metrics"]["train_metric"] == "full_pass"
        self.engine = config["engine"]
        self.hash = training_hash(config)
        self.channels_last = self.engine["channels_last"]

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.config["seed"])
        model = models.build(self.config["model"], self.data.input_shape, self.data.n_classes)
        model = model.to(self.device)
        if self.engine["channels_last"] and models.is_conv(model):
            model = model.to(memory_format=torch.channels_last)  # faster convs on GPU and CPU
        return model

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        opt = self.config["optimizer"]
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=opt["momentum"], weight_decay=opt["weight_decay"]
        )

    def _autocast(self) -> torch.autocast:
        enabled = self.engine["bf16"] and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of SGD; returns (mean batch loss, accuracy) of the epoch, on the device."""
        model.train()
        n = len(self.data.train_y)
        order, draws = self.data.epoch_order(generator)  # the epoch's randomness, drawn up front
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        step = self._compiled_step(model, optimizer)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            inputs = self.data.train_batch(
                index, None if draws is None else draws[:, start : start + self.batch_size]
            )
            labels = self.data.train_y[index]
            loss, hits = step(inputs, labels)
            loss_sum += loss * len(index)  # stays on the device: no sync per step
            correct += hits
        return loss_sum / n, correct.float() / n

    def _compiled_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
        """The forward/backward/update of one batch, through torch.compile if engine.compile."""

        def step(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = model(inputs)
                loss = self.loss(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach(), (logits.detach().argmax(-1) == labels).sum()

        if self.engine["compile"] and not getattr(model, "_lrdecay_compiled", False):
            # Compiles forward+backward of the model; optimizer.step runs eagerly (exact SGD).
            model.compile()
            model._lrdecay_compiled = True
        return step

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy of a full pass in eval mode (no augmentation)."""
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(labels), self.eval_batch):
            batch_labels = labels[start : start + self.eval_batch]
            with self._autocast():
                logits = model(self.data.to_float(images[start : start + self.eval_batch]))
            loss_sum += self.loss(logits.float(), batch_labels) * len(batch_labels)
            correct += (logits.argmax(-1) == batch_labels).sum()
        return loss_sum / len(labels), correct.float() / len(labels)

    def epoch_row(
        self, spec: PathSpec, model: nn.Module, epoch: int, running: tuple | None
    ) -> dict:
        """Evaluate and read the epoch's metrics back to the host (the one sync per epoch)."""
        test = self.evaluate(model, self.data.test_x, self.data.test_y)
        if self.full_pass or running is None:
            train = self.evaluate(model, self.data.train_x, self.data.train_y)
        else:
            train = running
        values = torch.stack([train[0], train[1], test[0], test[1]]).tolist()
        return self.make_row(spec, epoch, values, self.full_pass or running is None)

    @staticmethod
    def make_row(spec: PathSpec, epoch: int, values: list[float], full_pass: bool) -> dict:
        """A metrics row from [train_loss, train_acc, test_loss, test_acc]."""
        after = None if spec.branch_epoch is None else epoch - spec.branch_epoch
        return {
            "path": "main" if spec.branch_epoch is None else "subpath",
            "branch_epoch": spec.branch_epoch,
            "epoch": epoch,
            "epochs_after_decay": after,
            "lr": spec.lr,
            "train_loss": values[0],
            "train_acc": values[1],
            "test_loss": values[2],
            "test_acc": values[3],
            "train_metric": "full_pass" if full_pass else "running",
        }


def diverged(row: dict) -> bool:
    return not all(np.isfinite([row["train_loss"], row["test_loss"]]))


def divergence_message(spec: PathSpec, epoch: int, row: dict, kept: Path) -> str:
    """What diverged, when, at which learning rate, and what to change."""
    return (
        f"{spec.name} diverged at epoch {epoch} (lr {spec.lr}): train loss "
        f"{row['train_loss']}, test loss {row['test_loss']}. Lower the learning rate "
        "(optimizer.main_lr / optimizer.subpath_lr) or use the mse/cross_entropy loss "
        f"that suits the model. Epochs before {epoch} are kept in {kept}."
    )


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def full_state(model, optimizer, generator, device, epoch: int, rows: list, cfg_hash: str) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(generator, device),
        "epoch": epoch,
        "metrics": rows,
        "config_hash": cfg_hash,
    }


def reopen_snapshots(path: Path, shape: tuple[int, ...], dtype: str) -> np.memmap | None:
    """The resume folder's snapshot array opened for writing, or None (with a warning) if it is
    truncated or not the expected shape, in which case the path restarts instead of crashing."""
    try:
        array = np.lib.format.open_memmap(path, mode="r+")
    except (OSError, ValueError) as err:
        log.warning("resume snapshots %s are unreadable (%s); starting the path afresh", path, err)
        return None
    if array.shape != shape or array.dtype != np.dtype(dtype):
        log.warning("resume snapshots %s have shape %s %s, expected %s %s; starting afresh",
                    path, array.shape, array.dtype, shape, dtype)
        return None
    return array


def snapshot_epochs(start: int, end: int, every: int, include_start: bool) -> list[int]:
    """Epochs in (start, end] (and start itself if asked) whose parameters are saved."""
    epochs = [e for e in range(start + 1, end + 1) if e % every == 0 or e == end]
    return ([start] if include_start else []) + epochs


@dataclass
class PathRun:
    """Train one path from epoch `start` to `end`, resuming from `work` if a state is there.

    `initial` loads the state at `start` (a main-path or branch checkpoint); `branch_points`
    lists the epochs inside (start, end) whose full state is saved for subpaths.
    """

    trainer: Trainer
    spec: PathSpec
    start: int
    end: int
    work: Path
    initial: Callable[[nn.Module, torch.optim.Optimizer], list]
    snapshot_start: bool = False
    branch_points: tuple[int, ...] = ()

    def run(self) -> None:
        trainer, device = self.trainer, self.trainer.device
        cfg = trainer.config
        every = cfg["trajectory"]["every_epochs"]
        snap_epochs = snapshot_epochs(self.start, self.end, every, self.snapshot_start)
        self.work.mkdir(parents=True, exist_ok=True)
        state_path, snap_path = self.work / "state.pt", self.work / "snapshots.npy"

        model = trainer.build_model()
        optimizer = trainer.build_optimizer(model, self.spec.lr)
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg["seed"] * 7919 + self.spec.seed_offset)
        n_params = sum(p.numel() for p in model.parameters())

        resumed = self._try_resume(state_path, snap_path, trainer.hash)
        shape, dtype = (len(snap_epochs), n_params), cfg["trajectory"]["dtype"]
        snapshots = None if resumed is None else reopen_snapshots(snap_path, shape, dtype)
        if snapshots is None:
            resumed = None
        if resumed is not None:
            model.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
            _restore_rng(resumed["rng"], generator, device)
            epoch, rows = resumed["epoch"], resumed["metrics"]
            log.info("%s: resumed at epoch %d from %s", self.spec.name, epoch, state_path)
        else:
            torch.manual_seed(cfg["seed"] * 7919 + self.spec.seed_offset)  # dropout stream
            rows = self.initial(model, optimizer)
            for group in optimizer.param_groups:
                group["lr"] = self.spec.lr
            epoch = self.start
            snapshots = np.lib.format.open_memmap(snap_path, mode="w+", dtype=dtype, shape=shape)
            if self.snapshot_start:
                rows = rows + [trainer.epoch_row(self.spec, model, epoch, None)]
                snapshots[0] = flat_parameters(model).cpu().numpy()

        last_save = time.monotonic()
        started, first_epoch = time.monotonic(), epoch
        while epoch < self.end:
            running = trainer.train_epoch(model, optimizer, generator)
            epoch += 1
            row = trainer.epoch_row(self.spec, model, epoch, running)
            if diverged(row):
                raise DivergenceError(divergence_message(self.spec, epoch, row, self.work))
            rows.append(row)
            if epoch in snap_epochs:
                snapshots[snap_epochs.index(epoch)] = flat_parameters(model).cpu().numpy()
            if epoch in self.branch_points:
                branch_path = self.work / f"branch-{epoch:04d}.pt"
                self._save(branch_path, snapshots, model, optimizer, generator, epoch, rows)
            if time.monotonic() - last_save >= cfg["engine"]["checkpoint_seconds"]:
                self._save(state_path, snapshots, model, optimizer, generator, epoch, rows)
                last_save = time.monotonic()
            _progress(self.spec.name, epoch, first_epoch, self.end, started, row)
        self._save(state_path, snapshots, model, optimizer, generator, epoch, rows)
        del snapshots
        io.record_array(snap_path, {
            "path": self.spec.name, "branch_epoch": self.spec.branch_epoch,
            "epochs": snap_epochs, "config_hash": trainer.hash,
            "layout": "rows are flattened named_parameters at the listed epochs",
        })
        io.write_csv(self.work / "metrics.csv", pd.DataFrame(rows, columns=METRIC_COLUMNS))

    def _save(self, path: Path, snapshots: np.memmap, model, optimizer, generator, epoch: int,
              rows: list) -> None:
        snapshots.flush()  # snapshot rows up to `epoch` reach the disk before the state does
        state = full_state(model, optimizer, generator, self.trainer.device, epoch, rows,
                           self.trainer.hash)
        io.save_checkpoint(path, state)

    def _try_resume(self, state_path: Path, snap_path: Path, cfg_hash: str) -> dict | None:
        if not (state_path.exists() and snap_path.exists()):
            return None
        try:
            state = io.load_checkpoint(state_path, fix=STATE_FIX, map_location=self.trainer.device)
        except io.CorruptFileError as err:
            log.warning("ignoring unreadable resume state (%s); starting the path afresh", err)
            return None
        if state.get("config_hash") != cfg_hash:
            stale = state_path.with_name(f"stale-{int(time.time())}.pt")
            state_path.rename(stale)
            log.warning("resume state in %s was for another config; moved to %s", state_path, stale)
            return None
        return state


def _progress(name: str, epoch: int, first: int, end: int, started: float, row: dict) -> None:
    """One log line per epoch with the losses and an ETA, so long jobs show where they are."""
    done = epoch - first
    elapsed = time.monotonic() - started
    eta = elapsed / done * (end - epoch) if done else float("nan")
    log.info(
        "%s epoch %d/%d  train %.4f  test %.4f (acc %.3f)  %.1fs elapsed, ETA %.0fs",
        name, epoch, end, row["train_loss"], row["test_loss"], row["test_acc"], elapsed, eta,
    )


def _load_into(path: Path, device: torch.device) -> Callable:
    """An `initial` callback that restores model and optimiser from a verified checkpoint."""

    def initial(model: nn.Module, optimizer: torch.optim.Optimizer) -> list:
        state = io.load_checkpoint(path, fix=STATE_FIX, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return []

    return initial


def _link(source: Path, target: Path) -> None:
    """Hard-link (free, and the resume copy stays intact until the output is in place)."""
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def _finalize(work: Path, out_dir: Path, keep: list[str]) -> None:
    """Publish the finished files (and their sidecars) as the job's output folder, atomically."""
    with io.atomic_dir(out_dir) as tmp:
        for name in keep:
            for suffix in ("", ".json"):
                if (work / f"{name}{suffix}").exists():
                    _link(work / f"{name}{suffix}", tmp / f"{name}{suffix}")
    shutil.rmtree(work)


def run_main_segment(config: dict, data_path: str, end: int, out_dir: str, device_name: str,
                     threads: int | None = None) -> None:
    """Train the main path over the segment ending at `end` (end 0: initialise and evaluate)."""
    plan = Plan(config)
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    data = DeviceData(data_path, device, config["data"]["normalize"], config["data"]["augment"])
    trainer = Trainer(config, data, device)
    work = plan.resume_dir / f"main-segment-{end:04d}"
    if end == 0:
        start, initial, branches = 0, (lambda model, optimizer: []), ()
    else:
        start = plan.segment_start(end)
        initial = _load_into(Path(plan.segment_dir(start)) / "state.pt", device)
        branches = tuple(b for b in plan.branches_in_segment(end) if b != end)
    PathRun(trainer, main_spec(config), start, end, work, initial,
            snapshot_start=end == 0, branch_points=branches).run()
    keep = ["state.pt", "metrics.csv", "snapshots.npy"] + [f"branch-{b:04d}.pt" for b in branches]
    _finalize(work, Path(out_dir), keep)


def run_subpath_group(config: dict, data_path: str, group: int, out_dir: str, device_name: str,
                      threads: int | None = None) -> None:
    """Train the group's subpaths from their branch states; keep finished ones if one fails.

    engine.batched_subpaths picks K at once (lrdecay.batched) or one after another.
    """
    from lrdecay import batched  # imported here: lrdecay.batched builds on this module

    plan = Plan(config)
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    data = DeviceData(data_path, device, config["data"]["normalize"], config["data"]["augment"])
    trainer = Trainer(config, data, device)
    sub_epochs = config["schedule"]["subpath_epochs"]
    group_work = plan.resume_dir / f"subpath-group-{group:03d}"
    branches = plan.subpath_groups[group]
    works = {b: group_work / f"branch-{b:04d}" for b in branches}
    todo = [b for b in branches if not (works[b] / "metrics.csv").exists()]
    for b in sorted(set(branches) - set(todo)):
        log.info("branch %d already finished in %s", b, works[b])
    mode = config["engine"]["batched_subpaths"]
    if mode == "auto":  # measured: vmap is faster on GPUs, slower than one at a time on CPUs
        mode = "vmap" if device.type == "cuda" else "sequential"
    saved = batched.saved_members(group_work)
    if mode == "vmap" and saved is not None and set(saved) <= set(branches):
        todo = saved  # finish the interrupted batch as it was (its outputs are rewritten alike)
    failures: list[str] = []
    if mode == "vmap" and len(todo) > 1:
        specs = [branch_spec(config, b) for b in todo]
        failures = batched.BatchedGroupRun(
            trainer, specs, sub_epochs, [works[b] for b in todo],
            [plan.branch_state(b) for b in todo], group_work,
        ).run()
        todo = []
    for branch in todo:  # one at a time (also K = 1 under vmap: the plain path)
        spec = branch_spec(config, branch)
        try:
            PathRun(trainer, spec, branch, branch + sub_epochs, works[branch],
                    _load_into(plan.branch_state(branch), device), snapshot_start=True).run()
        except DivergenceError as err:
            failures.append(str(err))
            log.error("%s", err)
    if failures:
        raise DivergenceError(
            "; ".join(failures) + f". The group's other subpaths finished and are kept in "
            f"{group_work}; a rerun retrains only the failed ones."
        )
    with io.atomic_dir(out_dir) as tmp:
        frames = []
        for branch in plan.subpath_groups[group]:
            work = group_work / f"branch-{branch:04d}"
            frames.append(pd.read_csv(work / "metrics.csv"))
            for suffix in ("", ".json"):
                _link(work / f"snapshots.npy{suffix}", tmp / f"branch-{branch:04d}.npy{suffix}")
        io.write_csv(tmp / "metrics.csv", pd.concat(frames, ignore_index=True))
    shutil.rmtree(group_work)
