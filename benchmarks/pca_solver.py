"""The PCA job's exact solver (lrdecay.analysis.pca, Gram matrix + eigh) against scikit-learn's full
SVD.

Each solver runs in its own process on the same trajectories (the quick preset's shape by
default: a main path of 151 snapshots and 10 subpaths of 51, 85,002 parameters; or the
trajectories of a finished run with --run), so peak memory (VmHWM) is each solver's own. Prints
wall time, peak memory and their ratio, and the agreement: the largest relative difference of the
explained-variance ratios and of the variances, and 1 - |cos| between matching components (after
sign alignment, the largest difference of any entry).

    .venv/bin/python -m benchmarks.pca_solver --reps 3             # synthetic, quick's shape
    .venv/bin/python -m benchmarks.pca_solver --run results/quick/seed-0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lrdecay.core import io

REPO = Path(__file__).resolve().parents[1]

# One solver in a fresh process: its wall time (fit only), peak memory and result.
SOLVE = """
import json, sys, time
import numpy as np
from pathlib import Path
from lrdecay.analysis import pca
from lrdecay.core import logs
from lrdecay.training.trajectories import iter_trajectories
solver, out, files = sys.argv[1], Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
trajectories = list(iter_trajectories(files))
started = time.perf_counter()
if solver == "full-svd":
    from sklearn.decomposition import PCA
    stacked = np.concatenate([np.asarray(a, dtype=np.float64) for a, _ in trajectories])
    model = PCA(n_components=5, svd_solver="full").fit(stacked)
    parts = (model.explained_variance_ratio_, model.explained_variance_, model.components_)
else:
    logs.setup(None)
    result = pca._fit(trajectories, 5, "exact", 512)
    parts = (result.explained_variance_ratio, result.explained_variance, result.components)
wall = time.perf_counter() - started
np.savez(out, ratio=parts[0], variance=parts[1], components=parts[2])
print(json.dumps({"wall_s": wall, "peak_mb": logs.peak_memory_mb()}))
"""


def synthetic_run(folder: Path, n_params: int, seed: int = 0) -> list[Path]:
    """Trajectories shaped like the quick preset's: a drifting random walk for the main path
    (151 snapshots) and subpaths (51 each) branching every 10 snapshots from 10 to 100, with
    smaller steps (a decayed learning rate). Float32, as the pipeline writes them."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(size=n_params).astype(np.float32)
    steps = rng.normal(size=(150, n_params)).astype(np.float32) + 0.5 * drift
    main = np.vstack([np.zeros((1, n_params), np.float32), np.cumsum(steps, axis=0)])
    files = [folder / "main.npy"]
    io.save_array(files[0], main, {"branch_epoch": None, "epochs": list(range(151))})
    for branch in range(10, 101, 10):
        sub = rng.normal(size=(50, n_params)).astype(np.float32) * 0.3 + 0.05 * drift
        rows = np.vstack([main[branch : branch + 1], main[branch] + np.cumsum(sub, axis=0)])
        path = folder / f"branch-{branch:04d}.npy"
        io.save_array(path, rows, {"branch_epoch": branch, "epochs": list(range(51))})
        files.append(path)
    return files


def run_files(seed_dir: Path) -> list[Path]:
    from lrdecay.training.trajectories import trajectory_files
    return trajectory_files(seed_dir / "trajectories" / "main.npy",
                            sorted((seed_dir / "subpaths").glob("group-*")))


def solve(solver: str, files: list[Path], out: Path) -> tuple[dict, dict]:
    proc = subprocess.run([sys.executable, "-c", SOLVE, solver, str(out), *map(str, files)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode:
        raise SystemExit(f"{solver} failed:\n{proc.stderr[-3000:]}")
    with np.load(out) as arrays:
        return json.loads(proc.stdout.split("\n")[-2]), dict(arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run's seed folder (seed-0)")
    parser.add_argument("--params", type=int, default=85_002, help="synthetic: parameters")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = run_files(args.run) if args.run else synthetic_run(tmp, args.params)
        shape = (sum(len(io.load_array(f, "")[0]) for f in files),
                 io.load_array(files[0], "")[0].shape[1])
        print(f"{len(files)} trajectories, {shape[0]} snapshots x {shape[1]} parameters "
              f"({'from ' + str(args.run) if args.run else 'synthetic'})")
        timings: dict[str, list[dict]] = {"full-svd": [], "gram-eigh": []}
        results = {}
        for rep in range(args.reps):
            for solver in timings:
                stats, results[solver] = solve(solver, files, tmp / f"{solver}.npz")
                timings[solver].append(stats)
                print(f"rep {rep} {solver:9s}: {stats['wall_s']:7.2f} s, "
                      f"peak {stats['peak_mb']:6.0f} MB", flush=True)
    med = {s: {k: statistics.median(t[k] for t in runs) for k in ("wall_s", "peak_mb")}
           for s, runs in timings.items()}
    old, new = results["full-svd"], results["gram-eigh"]
    ratio_err = np.max(np.abs(new["ratio"] / old["ratio"] - 1))
    var_err = np.max(np.abs(new["variance"] / old["variance"] - 1))
    cos = np.abs(np.sum(new["components"] * old["components"], axis=1))
    signs = np.sign(np.sum(new["components"] * old["components"], axis=1))
    entry_err = np.max(np.abs(new["components"] - signs[:, None] * old["components"]))
    for what, key, unit in (("wall", "wall_s", "s"), ("peak", "peak_mb", "MB")):
        before, after = med["full-svd"][key], med["gram-eigh"][key]
        print(f"median {what}: full SVD {before:.2f} {unit}, Gram + eigh {after:.2f} {unit}: "
              f"{before / after:.1f}x")
    print(f"explained variance ratio {np.round(old['ratio'], 6).tolist()}: max relative "
          f"difference {ratio_err:.1e} (variances {var_err:.1e})")
    print(f"components: max 1 - |cos| {np.max(1 - cos):.1e}, max entry difference after "
          f"sign alignment {entry_err:.1e}, signs equal: {(signs > 0).tolist()}")
    for i in np.flatnonzero(signs < 0):  # sign convention: the largest |entry| is positive
        top = np.argsort(np.abs(old["components"][i]))[-2:]
        print(f"  component {i + 1}: full SVD's two largest |entries| {old['components'][i][top]}"
              f" at {top}, Gram's {new['components'][i][top]}")


if __name__ == "__main__":
    main()
