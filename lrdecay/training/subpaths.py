"""Subpath groups: the subpaths that branch from the main path, K at once or one after another.

Each subpath of a group starts from the main path's full state at its branch epoch and trains at
the subpath learning rate through the run loop of lrdecay.training.train (resume, RNG state,
snapshots, divergence). engine.batched_subpaths picks the engine: lrdecay.training.stacked (K
vmapped at once) or the plain module one subpath at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lrdecay.core import io, logs
from lrdecay.study import layout
from lrdecay.study.plan import SUBPATHS
from lrdecay.training import train
from lrdecay.training.engine import PathSpec
from lrdecay.training.stacked import make_stepper

log = logging.getLogger(__name__)


def branch_spec(config: dict, branch_epoch: int) -> PathSpec:
    """The subpath branching from the main path at `branch_epoch`."""
    return PathSpec(layout.BRANCH.name(branch_epoch), branch_epoch,
                    config["optimizer"]["subpath_lr"])


def saved_members(state_path: Path) -> list[int] | None:
    """Branch epochs of the resume state at `state_path` (None if there is none or it is bad)."""
    if not state_path.exists():
        return None
    try:
        return list(io.state_record(state_path, train.STATE_FIX)["branch_epochs"])
    except (io.CorruptFileError, KeyError, OSError, TypeError):
        return None


def run_subpath_group(config: dict, data_path: str, group: int, out_dir: str, device_name: str,
                      threads: int | None = None) -> None:
    """Train the group's subpaths from their branch states; keep finished ones if one fails.

    engine.batched_subpaths picks K at once (stacked, vmapped) or one after another. Only the
    keys the subpaths declare (lrdecay.study.plan.SUBPATHS) reach them.
    """
    config = SUBPATHS.narrow(config)
    plan, trainer = train.setup(config, data_path, device_name, threads, SUBPATHS)
    sub_epochs = config["schedule"]["subpath_epochs"]
    group_work = train.keyed_work(plan.group_work(group), trainer.hash, plan.run_dir)
    branches = plan.subpath_groups[group]
    works = {b: io.guard(group_work / layout.BRANCH.name(b), plan.run_dir) for b in branches}
    todo = [b for b in branches if not (works[b] / layout.METRICS).exists()]
    for b in sorted(set(branches) - set(todo)):
        log.info("branch %d already finished with this config (training hash %s) in %s",
                 b, trainer.hash, works[b])
    mode = config["engine"]["batched_subpaths"]
    if mode == "auto":  # measured: vmap is faster on GPUs, slower than one at a time on CPUs
        mode = "vmap" if trainer.device.type == "cuda" else "sequential"
    saved = saved_members(group_work / train.STATE_NAME)
    if mode == "vmap" and saved is not None and set(saved) <= set(branches):
        todo = saved  # finish the interrupted batch as it was (its outputs are rewritten alike)
    batches = [todo] if mode == "vmap" else [[b] for b in todo]
    # one console progress for the whole job (all its subpaths), not one per subpath
    progress = logs.Progress(f"subpath group {group} (branches {', '.join(map(str, branches))})",
                             len(branches) * sub_epochs, "path-epochs")
    progress.skip((len(branches) - len(todo)) * sub_epochs)
    failures: list[str] = []
    for batch in batches:
        if not batch:
            continue
        state_dir = group_work if len(batch) > 1 else works[batch[0]]
        failures += train.PathsRun(
            trainer, [branch_spec(config, b) for b in batch], batch, sub_epochs,
            [works[b] for b in batch], [plan.branch_state(b) for b in batch],
            state_dir / train.STATE_NAME, new_stepper=make_stepper, root=plan.run_dir,
            progress=progress,
        ).run()
    if failures:
        raise train.DivergenceError(
            "; ".join(failures) + f". The group's other subpaths finished and are kept in "
            f"{group_work}; a rerun retrains only the failed ones."
        )
    with io.atomic_dir(out_dir, root=plan.run_dir) as tmp:
        frames = []
        for branch in branches:
            frames.append(io.load_csv(io.guard(works[branch] / layout.METRICS), (
                f"delete the folder {works[branch]} and rerun; the job retrains that subpath")))
            for source, name in [(layout.SNAPSHOTS, layout.BRANCH_SNAPSHOTS.name(branch)),
                                 (layout.WEIGHTS, layout.BRANCH_WEIGHTS.name(branch))]:
                for suffix in ("", ".json"):
                    io.link(works[branch] / f"{source}{suffix}", tmp / f"{name}{suffix}",
                            plan.run_dir)
        io.save_csv(tmp / layout.METRICS, pd.concat(frames, ignore_index=True))
    train.remove_work(group_work)
