"""Gather the per-job outputs into one table and one memory-mappable trajectory per path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from lrdecay import io

ARRAY_FIX = "delete the folder that holds it and rerun the workflow (snakemake regenerates it)"


def gather_main(segment_dirs: list[str | Path], out_path: str | Path) -> None:
    """Concatenate the main path's segment snapshots (in epoch order) into one .npy."""
    parts = [io.load_array(Path(d) / "snapshots.npy", ARRAY_FIX) for d in segment_dirs]
    parts.sort(key=lambda part: part[1]["epochs"][0])
    epochs = [e for _, meta in parts for e in meta["epochs"]]
    if epochs != sorted(set(epochs)):
        raise ValueError(f"main-path segments overlap or are out of order: epochs {epochs}")
    total = sum(len(array) for array, _ in parts)
    out_path = Path(out_path)
    with io.atomic_path(out_path) as tmp:
        merged = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=parts[0][0].dtype, shape=(total, parts[0][0].shape[1])
        )
        row = 0
        for array, _ in parts:  # chunk by chunk: never more than one segment in memory
            merged[row : row + len(array)] = array
            row += len(array)
        merged.flush()
        del merged
    io.record_array(out_path, {**{k: v for k, v in parts[0][1].items()
                                  if k in ("path", "branch_epoch", "config_hash", "layout")},
                               "epochs": epochs})


def gather_metrics(csv_paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    """One tidy table: a row per (path, branch epoch, epoch)."""
    frame = pd.concat([pd.read_csv(p) for p in csv_paths], ignore_index=True)
    frame["branch_epoch"] = frame["branch_epoch"].astype("Int64")
    frame["epochs_after_decay"] = frame["epochs_after_decay"].astype("Int64")
    frame = frame.sort_values(["path", "branch_epoch", "epoch"], na_position="first")
    io.write_csv(out_path, frame)
    return frame


def trajectory_files(main_path: str | Path, group_dirs: list[str | Path]) -> list[Path]:
    """The main trajectory first, then every subpath's, in branch order."""
    branches = sorted(p for d in group_dirs for p in Path(d).glob("branch-*.npy"))
    return [Path(main_path), *branches]


def iter_trajectories(files: list[Path]) -> Iterator[tuple[np.ndarray, dict]]:
    """(memory-mapped array (n_snapshots, n_params), sidecar) for each verified file."""
    for path in files:
        yield io.load_array(path, ARRAY_FIX)
