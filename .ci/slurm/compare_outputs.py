"""Compare two runs of the workflow: every table (CSV) and array (.npy) must match exactly.

Usage: python compare_outputs.py REFERENCE_RUN_DIR OTHER_RUN_DIR

The same config on CPU is deterministic, so a SLURM run must reproduce the local run bit for
bit. Figures, logs and provenance sidecars (which may hold paths, hosts, times) are not compared.
Exits 1 listing every difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def compare(reference: Path, other: Path) -> list[str]:
    """Every difference between the tables/arrays of two run folders, as readable lines."""
    problems: list[str] = []
    files = sorted(
        p.relative_to(reference)
        for p in reference.rglob("*")
        if p.suffix in (".csv", ".npy") and p.is_file() and ".resume" not in p.parts
    )
    if not files:
        return [f"no .csv or .npy files under {reference}"]
    theirs = {p.relative_to(other) for p in other.rglob("*") if p.suffix in (".csv", ".npy")}
    problems += [f"only in {other}: {p}" for p in sorted(theirs - set(files))]
    for rel in files:
        a, b = reference / rel, other / rel
        if not b.is_file():
            problems.append(f"missing in {other}: {rel}")
        elif a.read_bytes() == b.read_bytes():
            print(f"  identical  {rel}")
        elif rel.suffix == ".csv":
            try:
                pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b), check_exact=True)
                print(f"  equal      {rel} (same values, different formatting)")
            except AssertionError as err:
                problems.append(f"differs: {rel}\n{err}")
        else:
            x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
            if x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True):
                print(f"  equal      {rel} (same array, different header)")
            else:
                problems.append(f"differs: {rel} ({x.shape} {x.dtype} vs {y.shape} {y.dtype})")
    return problems


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    reference, other = map(Path, sys.argv[1:])
    problems = compare(reference, other)
    for line in problems:
        print(f"  PROBLEM    {line}")
    print(f"compare: {'FAILED' if problems else 'OK'} ({reference} vs {other})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
