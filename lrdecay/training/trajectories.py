"""Gather the per-job outputs into one table and one memory-mappable trajectory per path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from lrdecay.core import io
from lrdecay.study import layout
from lrdecay.study.plan import Plan


class IncompleteResultsError(RuntimeError):
    """A job's metrics lack planned paths or epochs (a cut or hand-edited file)."""


def gather_main(segment_dirs: list[str | Path], out_path: str | Path) -> None:
    """Concatenate the main path's segment snapshots (in epoch order) into one .npy."""
    parts = [io.load_array(path, io.rerun_fix(path))
             for path in (Path(d) / layout.SNAPSHOTS for d in segment_dirs)]
    parts.sort(key=lambda part: part[1]["epochs"][0])
    epochs = [e for _, meta in parts for e in meta["epochs"]]
    if epochs != sorted(set(epochs)):
        raise ValueError(f"main-path segments overlap or are out of order: epochs {epochs}")
    total = sum(len(array) for array, _ in parts)
    out_path = Path(out_path)
    with io.atomic_path(out_path) as tmp:
        merged = io.open_memmap(tmp, mode="w+", dtype=parts[0][0].dtype,
                                shape=(total, parts[0][0].shape[1]))
        row = 0
        for array, _ in parts:  # chunk by chunk: never more than one segment in memory
            merged[row : row + len(array)] = array
            row += len(array)
        merged.flush()
        del merged
    kept = ("path", "branch_epoch", "config_hash", "settings", "layout")
    io.record_array(out_path, {**{k: v for k, v in parts[0][1].items() if k in kept},
                               "epochs": epochs})


def planned_rows(config: dict) -> set[tuple[int, int]]:
    """(branch epoch, epoch) of every planned metrics row; branch epoch -1 is the main path."""
    plan = Plan(config)
    sched = config["schedule"]
    rows = {(-1, e) for e in range(sched["main_epochs"] + 1)}
    for b in plan.branch_epochs:
        rows |= {(b, e) for e in range(b, b + sched["subpath_epochs"] + 1)}
    return rows


def check_complete(frame: pd.DataFrame, config: dict, sources: list[str | Path],
                   fix: str | None = None) -> None:
    """Raise naming the missing (or unplanned, or repeated) paths and epochs and the fix (by
    default: rerun the job folders the rows were read from)."""
    found = list(zip(frame["branch_epoch"].fillna(-1).astype(int), frame["epoch"].astype(int),
                     strict=True))
    planned = planned_rows(config)
    problems = []
    for what, keys in (("missing", sorted(planned - set(found))),
                       ("not in the plan", sorted(set(found) - planned)),
                       ("repeated", sorted(k for k, n in Counter(found).items() if n > 1))):
        by_path: dict[int, list[int]] = {}
        for branch, epoch in keys:
            by_path.setdefault(branch, []).append(epoch)
        for branch, epochs in by_path.items():
            name = "main path" if branch == -1 else f"subpath branching at {branch}"
            span = f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else f"{epochs[0]}"
            problems.append(f"{name}: {len(epochs)} epoch(s) {what} ({span})")
    if problems:
        folders = sorted({str(Path(p).parent) for p in sources})
        where = (f"Read from {', '.join(folders)}. Fix: delete the folder of the job that lacks "
                 "them and rerun the same command (Snakemake reruns that job)."
                 if fix is None else f"Read from {', '.join(map(str, sources))}. Fix: {fix}")
        raise IncompleteResultsError(
            "the training metrics do not match the plan: " + "; ".join(problems[:10])
            + f". {where}")


def gather_metrics(csv_paths: list[str | Path], out_path: str | Path,
                   config: dict | None = None) -> pd.DataFrame:
    """One tidy table: a row per (path, branch epoch, epoch); with `config`, every planned path
    and epoch must be there exactly once (checked before anything is written)."""
    # each job's table against its checksum record: a number edited by hand is named, not used
    frame = pd.concat([io.load_csv(p, io.rerun_fix(p)) for p in csv_paths], ignore_index=True)
    if config is not None:
        check_complete(frame, config, csv_paths)
    frame["branch_epoch"] = frame["branch_epoch"].astype("Int64")
    frame["epochs_after_decay"] = frame["epochs_after_decay"].astype("Int64")
    frame = frame.sort_values(["path", "branch_epoch", "epoch"], na_position="first")
    io.save_csv(out_path, frame)  # with its record: load_metrics catches a later hand edit
    return frame


def gathered_fix(path: str | Path) -> str:
    """How to regenerate the gathered table: it is a file output of its own job (not a folder),
    so deleting it and its record makes Snakemake rerun gather_training."""
    path = Path(path)
    return (f"delete {path} and its record {path.name}.json and rerun the same command; "
            f"Snakemake then regathers it from the training jobs' tables (or: snakemake --force "
            f"{path})")


def load_metrics(path: str | Path, config: dict | None = None) -> pd.DataFrame:
    """A seed's gathered metrics table (gather_metrics), the one way downstream jobs read it:
    verified against its size/SHA-256 record, so a value edited by hand is named instead of
    drawn, and, with `config` (its `schedule`), checked to hold every planned path and epoch
    exactly once, so a row cut and the record resealed is named too."""
    frame = io.load_csv(path, gathered_fix(path))
    if config is not None:
        check_complete(frame, config, [path], gathered_fix(path))
    return frame


def trajectory_files(main_path: str | Path, group_dirs: list[str | Path]) -> list[Path]:
    """The main trajectory first, then every subpath's, in branch order."""
    branches = sorted(p for d in group_dirs for p in Path(d).glob(layout.BRANCH_SNAPSHOTS.glob))
    return [Path(main_path), *branches]


def iter_trajectories(files: list[Path]) -> Iterator[tuple[np.ndarray, dict]]:
    """(memory-mapped array (n_snapshots, n_params), sidecar) for each verified file."""
    for path in files:
        yield io.load_array(path, io.rerun_fix(path))
