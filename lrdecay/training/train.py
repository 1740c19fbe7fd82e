"""Training: the run loop of every path, and main-path segments; resumable after a kill.

One loop (`PathsRun`) trains K paths over an engine: lrdecay.training.engine (K = 1) for the main
path and for subpaths one at a time, lrdecay.training.stacked (K > 1) for subpaths at once, which
the subpath groups (lrdecay.training.subpaths) pass in. It owns resume, RNG state, snapshots,
logging and divergence handling for all of them.

A run's whole state (weights, optimiser buffers, every RNG, epoch, metrics so far) is one file
with its checksum record inside, committed by one rename, in a folder of <run>/.resume/ named by
the training hash: a state from another config is never reused but set aside with a log line.
.resume/ is never a Snakemake output, so Snakemake's cleanup of a failed job cannot delete it.
Snapshots are written row by row into a preallocated .npy there. On CPU a resumed run gives
bit-identical outputs to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrdecay.core import io, logs
from lrdecay.study import layout, schedules
from lrdecay.study.plan import MAIN_PATH, Plan, Reads
from lrdecay.training.data import DeviceData
from lrdecay.training.engine import (
    METRIC_COLUMNS,
    DivergenceError,
    PathSpec,
    Stepper,
    Trainer,
    configure_backend,
    diverged,
    divergence_message,
    resolve_device,
    single_stepper,
)

log = logging.getLogger(__name__)

STATE_NAME = layout.RESUME_STATE
STATE_FIX = "nothing to do: the job starts this path afresh"
SET_ASIDE = "set-aside"

__all__ = ["DivergenceError", "PathsRun", "run_main_segment"]


def main_spec(config: dict) -> PathSpec:
    return PathSpec("main", None, config["optimizer"]["main_lr"])


def keyed_work(folder: Path, cfg_hash: str, root: Path | None = None) -> Path:
    """<resume>/<job>/<training hash>, `folder` the job's resume folder (Plan.segment_work,
    Plan.group_work): the only partial state this config may resume from.

    Anything else under <resume>/<job> (another config's partial or finished paths) is moved to
    <resume>/set-aside/ with a warning, never reused and never deleted. No folder of it below
    `root` (the run folder) may be a symbolic link (lrdecay.core.io.guard).
    """
    resume_dir, name = folder.parent, folder.name
    folder = io.guard(folder, root)
    io.guard(folder / cfg_hash)
    if folder.is_dir():
        for other in sorted(folder.iterdir()):
            if other.name == cfg_hash:
                continue
            aside = resume_dir / SET_ASIDE / f"{name}-{other.name}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(other, aside)
            log.warning("%s holds state of another config (training hash %s, this run %s): "
                        "not reused, moved to %s (delete it when not needed)",
                        folder, other.name, cfg_hash, aside)
    return folder / cfg_hash


def remove_work(work: Path) -> None:
    """Delete a finished job's resume folder and its name folder once empty."""
    shutil.rmtree(work)
    try:
        work.parent.rmdir()
    except OSError:
        pass


def reopen_snapshots(path: Path, shape: tuple[int, ...], dtype: str) -> np.memmap | None:
    """The resume folder's snapshot array opened for writing, or None (with a warning) if it is
    truncated or not the expected shape, in which case the path restarts instead of crashing."""
    try:
        array = io.open_memmap(path, mode="r+")
    except (OSError, ValueError) as err:
        log.warning("resume snapshots %s are unreadable (%s); starting afresh", path, err)
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


def check_one_schedule(specs: list[PathSpec], starts: list[int], works: list[Path],
                       initial: list[Path | None]) -> None:
    """The run's invariant, one lr per group: the paths trained together share one lr schedule.
    The engine steps all of them at the first path's lr, and lrdecay.study.schedules gives one lr
    per step for all, counted from the branch point for subpaths and from epoch 0 for the main path;
    a path of another lr, or the main path beside subpaths, would silently train at a schedule
    not its own. Checked before any work, as the one-start-per-path shape of the run."""
    names = [s.name for s in specs]
    if not specs or not len(starts) == len(works) == len(initial) == len(specs):
        raise ValueError(f"a run needs one start, work folder and initial state per path: "
                         f"{len(specs)} paths {names}, {len(starts)} starts, {len(works)} work "
                         f"folders, {len(initial)} initial states")
    lrs = {s.name: s.lr for s in specs}
    main = [s.name for s in specs if s.branch_epoch is None]
    if len(set(lrs.values())) > 1 or (main and len(specs) > 1):
        raise ValueError(
            f"paths trained together must share one lr schedule (one lr per group), but they "
            f"have lrs {lrs}{' and include the main path' if main and len(specs) > 1 else ''}: "
            "train paths of another lr or schedule in a run of their own (a subpath group's "
            "paths all take optimizer.subpath_lr, lrdecay.training.subpaths.branch_spec)")


@dataclass
class LoopState:
    """What the run loop carries from epoch to epoch. `active` (members still training), `t`
    (epochs done in this run), `rows` and `failures` are what a resume state restores, beside the
    engine's and the generators' state."""

    stepper: Stepper
    generators: list[torch.Generator]  # each member's data order
    snaps: list[list[int]]  # each member's snapshot epochs
    memmaps: dict[int, np.memmap] = field(default_factory=dict)  # each active member's snapshots
    active: list[int] = field(default_factory=list)
    t: int = 0
    rows: dict[int, list[dict]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class PathsRun:
    """Train paths `specs` (one lr, one length) together from their `initial` states.

    Member i runs from epoch `starts[i]` for `length` epochs and writes in `works[i]`:
    snapshots.npy (+ sidecar), state.pt if `publish_state`, and, last, metrics.csv (which marks it
    done). `initial[i]` is a main-path checkpoint (None: the freshly built model). `branch_points`
    (K = 1) are the epochs whose full state is saved as branch-XXXX.pt for subpaths. The resume
    state is `state_path`. Nothing below `root` (the run folder) on the way to a work file may
    be a symbolic link (lrdecay.core.io.guard).
    """

    trainer: Trainer
    specs: list[PathSpec]
    starts: list[int]
    length: int
    works: list[Path]
    initial: list[Path | None]
    state_path: Path
    snapshot_start: bool = True
    branch_points: tuple[int, ...] = ()
    publish_state: bool = False
    # (trainer, K, lr) -> the engine of K paths. One model here; the subpath groups pass
    # lrdecay.training.stacked.make_stepper, so this module never imports the vmap code.
    new_stepper: Callable[[Trainer, int, float], Stepper] = single_stepper
    # The job's console progress (a subpath group passes one for all its subpaths); None: one
    # for this run's path-epochs.
    progress: logs.Progress | None = None
    root: Path | None = None

    def __post_init__(self) -> None:
        check_one_schedule(self.specs, self.starts, self.works, self.initial)

    def run(self) -> list[str]:
        """Train; return the divergence messages of the paths that failed (others finished)."""
        loop = self._prepare()
        if not self._resume(loop):
            self._start(loop)
        self._train(loop)
        self._publish(loop)
        self.state_path.unlink(missing_ok=True)
        return loop.failures

    # -- the steps ---------------------------------------------------------------------------
    def _prepare(self) -> LoopState:
        """The folders, the engine of the K paths and each path's data-order generator."""
        trainer, cfg = self.trainer, self.trainer.config
        every = cfg["trajectory"]["every_epochs"]
        snaps = [snapshot_epochs(s, s + self.length, every, self.snapshot_start)
                 for s in self.starts]
        io.guard(self.state_path, self.root).parent.mkdir(parents=True, exist_ok=True)
        for work in self.works:
            io.guard(work, self.root).mkdir(parents=True, exist_ok=True)
        stepper = self.new_stepper(trainer, len(self.specs), self.specs[0].lr)
        generators = [torch.Generator(device=trainer.device).manual_seed(cfg["seed"] * 7919
                                                                          + s.seed_offset)
                      for s in self.specs]
        return LoopState(stepper, generators, snaps)

    def _resume(self, loop: LoopState) -> bool:
        """Continue from this run's saved state, if there is a usable one (with its snapshots)."""
        state = self._try_resume()
        if state is None:
            return False
        for i in state["active"]:
            snapshots = reopen_snapshots(self.works[i] / layout.SNAPSHOTS, self._shape(loop, i),
                                         self.trainer.config["trajectory"]["dtype"])
            if snapshots is None:
                loop.memmaps = {}
                return False
            loop.memmaps[i] = snapshots
        device = self.trainer.device
        loop.stepper.load_state(state)
        loop.active, loop.t, loop.rows = state["active"], state["t"], state["rows"]
        loop.failures = state["failures"]
        for i in loop.active:
            loop.generators[i].set_state(state["rng"]["generators"][i])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        log.info("%s: resumed at epoch %s from %s", self._label(),
                 "/".join(str(self.starts[i] + loop.t) for i in loop.active), self.state_path)
        return True

    def _start(self, loop: LoopState) -> None:
        """Start afresh from the initial states: fresh snapshot files, the first rows."""
        trainer, cfg, k = self.trainer, self.trainer.config, len(self.specs)
        # distance_from_start: a subpath from its branch point, the main path from epoch 0
        loop.stepper.load_initial(self.initial, io.rerun_fix,
                                  from_init=self.specs[0].branch_epoch is None)
        torch.manual_seed(cfg["seed"] * 7919 + self.specs[0].seed_offset)  # dropout stream
        loop.active, loop.t, loop.failures = list(range(k)), 0, []
        loop.rows = {i: [] for i in range(k)}
        for i in loop.active:
            loop.memmaps[i] = io.open_memmap(self.works[i] / layout.SNAPSHOTS, mode="w+",
                                             dtype=cfg["trajectory"]["dtype"],
                                             shape=self._shape(loop, i))
        if self.snapshot_start:
            values, flat = loop.stepper.evaluate(None), loop.stepper.flat().cpu().numpy()
            first = self._lrs(0)  # a path's first row: the lr of its first step
            for i in loop.active:
                loop.rows[i].append(trainer.make_row(self.specs[i], self.starts[i], values[i],
                                                     True, None if first is None else first[0]))
                loop.memmaps[i][0] = flat[i]

    def _train(self, loop: LoopState) -> None:
        """The epochs left: each trained, evaluated and recorded, the state saved now and then."""
        k = len(self.specs)
        last_save = time.monotonic()
        started, first_t = time.monotonic(), loop.t
        progress = self.progress or logs.Progress(
            f"{self._label()} epochs {self.starts[0]}-{self.starts[0] + self.length}",
            k * self.length, "epochs" if k == 1 else "path-epochs")
        progress.skip(loop.t * k)
        while loop.t < self.length and loop.active:
            self._epoch(loop, progress)
            self._save_branch_states(loop)
            seconds = self.trainer.config["engine"]["checkpoint_seconds"]
            if loop.active and time.monotonic() - last_save >= seconds:
                self._save(loop)
                last_save = time.monotonic()
            if loop.active:
                self._progress(loop.active, loop.t, first_t, started, loop.rows)

    def _epoch(self, loop: LoopState, progress: logs.Progress) -> None:
        """One epoch of every active path: its row, diverged paths dropped, snapshots taken."""
        trainer, stepper = self.trainer, loop.stepper
        lrs = self._lrs(loop.t)  # per step in a warm-up or cooldown, else None (constant lr)
        running = stepper.train_epoch([loop.generators[i] for i in loop.active], lrs)
        loop.t += 1
        values = stepper.evaluate(running)
        keep = []
        for j, i in enumerate(loop.active):
            epoch = self.starts[i] + loop.t
            row = trainer.make_row(self.specs[i], epoch, values[j], trainer.full_pass,
                                   None if lrs is None else lrs[-1])
            if diverged(row):
                loop.failures.append(divergence_message(self.specs[i], epoch, row,
                                                        self.works[i]))
                log.error("%s", loop.failures[-1])
                continue
            keep.append(j)
            loop.rows[i].append(row)
        active = loop.active
        progress.advance(len(active) + (len(active) - len(keep)) * (self.length - loop.t))
        if len(keep) < len(active):  # drop diverged paths; the others carry on unchanged
            stepper.keep(keep)
            for j, i in enumerate(active):
                if j not in keep:
                    del loop.memmaps[i]
            loop.active = [active[j] for j in keep]
        due = [j for j, i in enumerate(loop.active)
               if self.starts[i] + loop.t in loop.snaps[i]]
        if due:
            flat = stepper.flat().cpu().numpy()
            for j in due:
                i = loop.active[j]
                loop.memmaps[i][loop.snaps[i].index(self.starts[i] + loop.t)] = flat[j]

    def _save_branch_states(self, loop: LoopState) -> None:
        """The full state at this epoch where it is a branch point (the subpaths start there)."""
        for i in loop.active:
            if self.starts[i] + loop.t in self.branch_points:
                state = self._state(loop)
                self._flush(loop.memmaps)
                io.save_checkpoint(self.works[i] / layout.BRANCH_STATE.name(self.starts[i]
                                                                            + loop.t), state)

    def _publish(self, loop: LoopState) -> None:
        """Each finished path's files in its work folder, metrics last (it marks the path done)."""
        trainer, stepper = self.trainer, loop.stepper
        if loop.active:
            self._save(loop)
        state = self._state(loop)
        finals = stepper.weights() if loop.active else []  # none left when every path diverged
        for i, weights in zip(loop.active, finals, strict=True):  # full precision
            io.save_checkpoint(self.works[i] / layout.WEIGHTS, {"model": weights},
                               meta={"config_hash": trainer.hash, "settings": trainer.settings})
        for i in loop.active:
            del loop.memmaps[i]
            io.record_array(self.works[i] / layout.SNAPSHOTS, {
                "path": self.specs[i].name, "branch_epoch": self.specs[i].branch_epoch,
                "epochs": loop.snaps[i], "config_hash": trainer.hash,
                "settings": trainer.settings,
                "layout": "rows are flattened named_parameters at the listed epochs",
            })
            if self.publish_state:
                io.save_checkpoint(self.works[i] / layout.STATE, state,
                                   meta={"config_hash": trainer.hash,
                                         "settings": trainer.settings})
            frame = pd.DataFrame(loop.rows[i], columns=METRIC_COLUMNS + trainer.noise_columns
                                 + stepper.layer_columns)
            io.save_csv(self.works[i] / layout.METRICS, frame)  # last: marks the path done

    # -- pieces ------------------------------------------------------------------------------
    def _shape(self, loop: LoopState, i: int) -> tuple[int, int]:
        """Member i's snapshot array: a row per snapshot epoch, a column per parameter."""
        return (len(loop.snaps[i]), loop.stepper.n_params)

    def _lrs(self, t: int) -> list[float] | None:
        """Each step's lr in the run's epoch `t` (0: its first), the same for all its paths (they
        are all as many epochs into their schedule); None at the constant lr."""
        data = self.trainer.data
        n_steps = schedules.steps_per_epoch(len(data.train_y), self.trainer.batch_size)
        spec = self.specs[0]
        # the main path's schedule counts from epoch 0, a subpath's from its branch point
        epoch = t if spec.branch_epoch is not None else self.starts[0] + t
        return schedules.epoch_lrs(self.trainer.config, spec.branch_epoch, epoch, n_steps)

    def _label(self) -> str:
        if len(self.specs) == 1:
            return self.specs[0].name
        return "subpaths " + ",".join(str(s.branch_epoch) for s in self.specs)

    def _state(self, loop: LoopState) -> dict:
        """The run's whole state: what a resume restores, and a segment's published state.pt."""
        device, active, t = self.trainer.device, loop.active, loop.t
        rng = {"generators": {i: loop.generators[i].get_state() for i in active},
               "torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {**loop.stepper.state(), "members": [s.name for s in self.specs],
                "active": active, "t": t,
                "epoch": self.starts[active[0]] + t if active else None, "rows": loop.rows,
                "failures": loop.failures, "rng": rng, "config_hash": self.trainer.hash}

    @staticmethod
    def _flush(memmaps: dict) -> None:
        for snapshots in memmaps.values():
            snapshots.flush()  # snapshot rows up to now reach the disk before the state does

    def _save(self, loop: LoopState) -> None:
        """The resume state, after the snapshot rows so far."""
        self._flush(loop.memmaps)
        state = self._state(loop)
        # The record names the members: a rerun finishes this same set even if some are done.
        io.save_state(self.state_path, state, meta={
            "members": state["members"], "branch_epochs": [s.branch_epoch for s in self.specs],
            "t": loop.t, "config_hash": self.trainer.hash})

    def _try_resume(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            state = io.load_state(self.state_path, STATE_FIX, map_location=self.trainer.device)
        except io.CorruptFileError as err:
            log.warning("ignoring unreadable resume state (%s); starting afresh", err)
            return None
        members = [s.name for s in self.specs]
        if state.get("config_hash") != self.trainer.hash or state.get("members") != members:
            stale = self.state_path.with_name(f"stale-{time.time_ns()}.pt")
            self.state_path.rename(stale)
            log.warning("resume state %s is for another config or set of paths; moved to %s, "
                        "starting afresh", self.state_path, stale)
            return None
        if not all((self.works[i] / layout.SNAPSHOTS).exists() for i in state["active"]):
            log.warning("snapshot files of %s are missing; starting afresh", self.state_path)
            return None
        return state

    def _progress(self, active: list[int], t: int, first_t: int, started: float,
                  rows: dict) -> None:
        """One line per epoch with the losses, for the job's log file only (logs.DETAIL): the
        console gets the job's `Progress` lines."""
        done, elapsed = t - first_t, time.monotonic() - started
        eta = elapsed / done * (self.length - t) if done else float("nan")
        row = rows[active[0]][-1]
        others = f"; {len(active)} paths training" if len(self.specs) > 1 else ""
        log.info("%s epoch %d (+%d of %d): train loss %.4f, test loss %.4f, test accuracy "
                 "%.3f%s; %.1f s elapsed, about %.0f s left in this run",
                 self.specs[active[0]].name, self.starts[active[0]] + t, t, self.length,
                 row["train_loss"], row["test_loss"], row["test_acc"], others, elapsed, eta,
                 extra=logs.DETAIL)


def setup(config: dict, data_path: str, device_name: str, threads: int | None,
          reads: Reads) -> tuple[Plan, Trainer]:
    """The plan and trainer of a training job whose stage declares `reads`."""
    plan = Plan(config)
    device = resolve_device(device_name)
    configure_backend(config["engine"], device, threads)
    data = DeviceData(data_path, device, config["data"]["normalize"], config["data"]["augment"])
    return plan, Trainer(config, data, device, reads=reads)


def run_main_segment(config: dict, data_path: str, end: int, out_dir: str, device_name: str,
                     threads: int | None = None) -> None:
    """Train the main path over the segment ending at `end` (end 0: initialise and evaluate).

    Only the keys the main path declares (lrdecay.study.plan.MAIN_PATH) reach it, also when called
    with a whole config: reading a subpath key fails here rather than tie the main path to it."""
    config = MAIN_PATH.narrow(config)
    plan, trainer = setup(config, data_path, device_name, threads, MAIN_PATH)
    work = keyed_work(plan.segment_work(end), trainer.hash, plan.run_dir)
    if end == 0:
        start, initial, branches = 0, None, ()
    else:
        start = plan.segment_start(end)
        initial = plan.segment_dir(start) / layout.STATE
        branches = tuple(b for b in plan.branches_in_segment(end) if b != end)
    failures = PathsRun(trainer, [main_spec(config)], [start], end - start, [work], [initial],
                        work / STATE_NAME, snapshot_start=end == 0, branch_points=branches,
                        publish_state=True, root=plan.run_dir).run()
    if failures:
        raise DivergenceError(failures[0])
    keep = [layout.STATE, layout.METRICS, layout.SNAPSHOTS,
            *(layout.BRANCH_STATE.name(b) for b in branches)]
    # publish the finished files and their sidecars
    with io.atomic_dir(out_dir, root=plan.run_dir) as tmp:
        for name in keep:
            for suffix in ("", ".json"):
                if (work / f"{name}{suffix}").exists() or (work / f"{name}{suffix}").is_symlink():
                    io.link(work / f"{name}{suffix}", tmp / f"{name}{suffix}", plan.run_dir)
    remove_work(work)
