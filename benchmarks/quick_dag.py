"""The quick preset's whole DAG from scratch, at a baseline commit and at another, in one run.

    .venv/bin/python -m benchmarks.quick_dag --baseline 7d3c8e8 [--candidate HEAD] [--reps 1]
    .venv/bin/python -m benchmarks.quick_dag --baseline 7d3c8e8 --target toy_table  # toy only

Each commit is exported (`git archive`) to its own folder and built there by `snakemake --cores
N` with its own code first on PYTHONPATH, into a fresh results folder; the runs alternate
(baseline, candidate, baseline, ...), so both see the same load. Prints every run's wall time,
its CPU time (Snakemake and all its jobs, from getrusage), the per-job walls from Snakemake's
log, the longest silence in any job's log (the time between two of its lines), the
candidate/baseline ratios of the medians and the load average (`uptime`) before and after: on a
shared machine absolute times are upper bounds, the ratio is the measurement. With --compare,
every table and array (.csv, .npy, .npz) of both is compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks.dag_check import job_walls

REPO = Path(__file__).resolve().parents[1]
LOG_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")
END_LINE = re.compile(r"job ended after ([\d.]+) s")  # lrdecay.core.logs.END_OF_JOB
CPU_LINE = re.compile(r"job ended after .*; CPU ([\d.]+) s")  # its CPU time, where logged


def export(rev: str, into: Path) -> str:
    """`git archive` of `rev` into `into`; returns its short hash."""
    into.mkdir(parents=True)
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return short


def longest_silence(log: Path) -> float:
    """Longest time between consecutive timestamped lines of a job's log, counting the job's start
    (its end-of-job line's stamp minus the wall time it states) as a line: a job that logs
    nothing until it ends was silent for its whole run. 0 for a log with no timed line."""
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        if m := LOG_STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            stamps.append(stamp)
            if ended := END_LINE.search(line):
                stamps.append(stamp - timedelta(seconds=float(ended.group(1))))
    stamps.sort()
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    return max(gaps, default=0.0)


def job_cpu(log: Path) -> float | None:
    """CPU seconds a job's log states at its end (lrdecay.core.logs.END_OF_JOB; None in logs of
    commits that did not log it): its cost, which the machine's load hardly changes."""
    found = CPU_LINE.findall(log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def rule_cpu(jobs: list[dict]) -> str:
    """CPU seconds per rule summed over its jobs, largest first ("" where no log states it)."""
    sums: dict[str, float] = {}
    for job in jobs:
        if job.get("cpu_s") is not None:
            sums[job["rule"]] = sums.get(job["rule"], 0.0) + job["cpu_s"]
    return ", ".join(f"{rule} {cpu:.1f}" for rule, cpu in sorted(sums.items(),
                                                                key=lambda kv: -kv[1]))


def build(tree: Path, out: Path, cores: int, targets: list[str]) -> dict:
    """One from-scratch build of the quick DAG of `tree` into `out`: wall, jobs, silences."""
    results = out / "results"
    log = out / "snakemake.log"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(tree / "Snakefile"),
               "--directory", str(tree), "--cores", str(cores), "--nolock", *targets,
               "--config", f"output_dir={results}"]  # last: --config takes what follows
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=tree, env=env, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of Snakemake and every job (waited-for descendants): unlike the wall time,
    # this hardly depends on what else the machine runs; wall on N idle cores >= cpu / N
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"snakemake failed in {tree} (exit {done.returncode}); see {log}")
    # Snakemake's log names each job's log relative to --directory
    jobs = job_walls(log)
    for job in jobs:
        job["silence_s"] = longest_silence(tree / job["log"]) if job["log"] else 0.0
        job["cpu_s"] = job_cpu(tree / job["log"]) if job["log"] else None
    return {"wall_s": wall, "cpu_s": cpu, "jobs": jobs, "results": results}


def digests(results: Path) -> dict[str, str]:
    """sha256 of every table and array (.csv, .npy, .npz) under a results folder."""
    return {str(path.relative_to(results)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(results.rglob("*"))
            if path.is_file() and path.suffix in (".csv", ".npy", ".npz")}


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="commit measured as the baseline")
    parser.add_argument("--candidate", default="HEAD", help="commit compared with it")
    parser.add_argument("--reps", type=int, default=1, help="builds of each (alternating)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--target", action="append", default=[],
                        help="Snakemake targets (default: the whole DAG)")
    parser.add_argument("--compare", action="store_true",
                        help="compare every .csv, .npy and .npz of both, byte for byte")
    parser.add_argument("--keep", action="store_true", help="keep the build folders")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="quick_dag-"))
    revs = {"baseline": args.baseline, "candidate": args.candidate}
    trees, names = {}, {}
    for role, rev in revs.items():
        names[role] = export(rev, work / role / "tree")
        trees[role] = work / role / "tree"
    print(f"baseline {names['baseline']}, candidate {names['candidate']}; {args.cores} cores; "
          f"targets {args.target or ['(all)']}", flush=True)
    print("load before:", load(), flush=True)
    walls: dict[str, list[float]] = {"baseline": [], "candidate": []}
    cpus: dict[str, list[float]] = {"baseline": [], "candidate": []}
    last: dict[str, dict] = {}
    for rep in range(args.reps):
        order = ("baseline", "candidate") if rep % 2 == 0 else ("candidate", "baseline")
        for role in order:
            out = work / role / f"run-{rep}"
            out.mkdir(parents=True)
            run = build(trees[role], out, args.cores, args.target)
            walls[role].append(run["wall_s"])
            cpus[role].append(run["cpu_s"])
            last[role] = run
            top = sorted(run["jobs"], key=lambda j: -j["wall_s"])[:6]
            silent = max(run["jobs"], key=lambda j: j["silence_s"], default=None)
            print(f"{role} ({names[role]}) rep {rep}: {run['wall_s']:.1f} s wall, "
                  f"{run['cpu_s']:.1f} CPU-s, {len(run['jobs'])} jobs; longest:", ", ".join(
                      f"{j['rule']} {j['wall_s']:.0f} s" for j in top), flush=True)
            if silent:
                print(f"  longest silence in a job's log: {silent['silence_s']:.0f} s "
                      f"({silent['rule']}, {silent['log']})", flush=True)
            if per_rule := rule_cpu(run["jobs"]):
                print("  CPU-s per rule (the jobs' own, imports included):", per_rule,
                      flush=True)
            print("  load:", load(), flush=True)
    base, cand = statistics.median(walls["baseline"]), statistics.median(walls["candidate"])
    print(f"median wall: baseline {base:.1f} s, candidate {cand:.1f} s, ratio candidate/baseline "
          f"{cand / base:.3f}", flush=True)
    base, cand = statistics.median(cpus["baseline"]), statistics.median(cpus["candidate"])
    print(f"median CPU: baseline {base:.1f} s, candidate {cand:.1f} s, ratio candidate/baseline "
          f"{cand / base:.3f}", flush=True)
    if args.compare:
        a, b = digests(last["baseline"]["results"]), digests(last["candidate"]["results"])
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print(f"tables and arrays (.csv, .npy, .npz): {len(set(a) | set(b)) - len(differ)} "
              f"byte-identical, {len(differ)} differ{': ' if differ else ''}{', '.join(differ)}")
    print("load after:", load(), flush=True)
    if args.keep:
        print("build folders kept in", work)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
