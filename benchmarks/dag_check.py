"""A timed, shortened DAG of the authors' study through Snakemake, and the whole study projected.

    python -m benchmarks.dag_check --data .gpu-data --out $OUT [--bench $OUT/bench_gpu.json]
    python -m benchmarks.dag_check --data .gpu-data --out /tmp/x --tiny   # on CPU, in minutes

The shortened study keeps the authors' model, data, optimiser, K (subpaths_per_job) and all 81
subpaths, with fewer epochs: branches at 10, 11, ..., 90, each subpath `--subpath-epochs` long,
the main path to 90 + that, and a smaller landscape grid. From the run it measures, per job, the
wall time in Snakemake's log and the training time in the job's own log (per-epoch lines), so
  per-job overhead = job wall - training time   (start-up, data, compilation, output writing)
  per-epoch time   = training time / epochs     (main path; a group of K subpaths)
and projects the authors' whole study (config/authors.yaml) as the sum over its jobs of
overhead + epochs x per-epoch time (GPU jobs run one at a time under --resources gpu=1). The same
model, with the per-epoch times of bench_gpu.json when given (measured apart from this run),
projects the shortened run itself, next to its measured wall time: the check of the projection.
Writes dag_check.json and dag_outputs.tar.gz (figures, tables, every job's log) to --out.

One seed (the preset runs three: the whole study's projection multiplies by them). The run folder
is kept between calls, so a call cut by `--budget-s` (or by the device's time limit) resumes on
the next call on a warm machine (`--fresh` starts over); dag_check.json is written before
Snakemake starts and again at the end, with "complete" saying whether the DAG finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from lrdecay.config import validate as lrconfig
from lrdecay.core import io

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["figure1", "figure2"]  # rules: every figure and table of the study (not the toy)
# lrdecay.training.train's per-epoch log line: "<date> <time> ... epoch 12 (+3 of 10): ...; 4.2 s
# elapsed"
EPOCH_LINE = re.compile(r"^(\S+ \S+) .* epoch \d+ \(\+(\d+) of (\d+)\): .*; ([\d.]+) s elapsed")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
JOB_START = re.compile(r"^(?:local)?rule (\w+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
JOB_LOG = re.compile(r"^\s+log: (\S+)$")
JOB_END = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def short_config(args: argparse.Namespace) -> dict:
    """The authors' preset with fewer epochs (tiny: also fewer images, K and branches, on CPU)."""
    sub = args.subpath_epochs
    overrides: dict = {
        "run_name": "authors-short", "output_dir": str(args.work / "results"), "seeds": [0],
        "data": {"root": str(Path(args.data).resolve())},
        "schedule": {"first_branch_epoch": 10, "branch_interval": 1, "last_branch_epoch": 90,
                     "subpath_epochs": sub, "main_epochs": 90 + sub, "segment_epochs": 50},
        "trajectory": {"every_epochs": 5},
        "landscape": {"points": [21, 16], "shards": 2},
        "engine": {"checkpoint_seconds": 60},
    }
    if args.tiny:
        overrides.update(device="cpu", data={**overrides["data"], "train_per_class": 10,
                                             "test_per_class": 5})
        overrides["metrics"] = {"eval_batch_size": 100}
        overrides["schedule"] = {"first_branch_epoch": 2, "branch_interval": 1,
                                 "last_branch_epoch": 4, "subpath_epochs": sub,
                                 "main_epochs": 4 + sub, "segment_epochs": 3,
                                 "subpaths_per_job": 2}
        overrides["trajectory"] = {"every_epochs": 1}
        overrides["landscape"] = {"points": [4, 3], "shards": 1}
        overrides["optimizer"] = {"batch_size": 25}
    return lrconfig.load(REPO / "config" / "authors.yaml", overrides=overrides)


def run_snakemake(config_path: Path, cores: int, log: Path, budget_s: float | None) -> tuple[
        float, bool]:
    """Run the shortened study through Snakemake as a user would: (wall seconds, finished).

    With `budget_s`, Snakemake gets SIGTERM when it runs out (its jobs' resume states survive,
    so the next call continues) and the measurement covers the jobs that finished."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(REPO), "--configfile", str(config_path),
               "--cores", str(cores), "--resources", "gpu=1", "--scheduler", "greedy",
               "--nolock", *TARGETS]
    env = {**os.environ, "LRDECAY_CIFAR_SUBSET": "1",  # the carried folder is a deliberate subset
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    print("$", " ".join(command), flush=True)
    began = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            proc.terminate()  # Snakemake stops its jobs; their resume states are kept
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"snakemake stopped at the budget of {budget_s:.0f} s: measured what finished;"
                  " the same command resumes the rest", flush=True)
            return time.monotonic() - began, False
    wall = time.monotonic() - began
    if returncode != 0:
        sys.exit(f"snakemake failed (exit {returncode}); see {log}:\n"
                 + "".join(log.read_text().splitlines(True)[-40:]))
    return wall, True


def job_walls(snakemake_log: Path) -> list[dict]:
    """[{rule, log, wall_s}] for every job, from the timestamps in Snakemake's own log."""
    jobs: dict[str, dict] = {}
    stamp, block = None, None
    if not snakemake_log.is_file():
        return []
    for line in snakemake_log.read_text().splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := JOB_START.match(line):
            block = {"rule": m.group(1), "start": stamp, "log": None}
        elif (m := JOB_LOG.match(line)) and block is not None:
            block["log"] = m.group(1)
        elif (m := JOB_ID.match(line)) and block is not None:
            jobs[m.group(1)] = block
            block = None
        elif (m := JOB_END.match(line)) and m.group(1) in jobs:
            job = jobs[m.group(1)]
            job["wall_s"] = (stamp - job["start"]).total_seconds()
    return [{"rule": j["rule"], "log": j["log"], "wall_s": j["wall_s"]}
            for j in jobs.values() if "wall_s" in j]


def training_time(job_log: Path) -> tuple[int, float]:
    """(epochs, seconds) of training in a job's log, summed over its runs (one at a time: one
    per subpath) from each run's last per-epoch line (epoch +t/n, elapsed since its start)."""
    epochs = seconds = 0.0
    last_t, last_s = 0, 0.0
    for line in job_log.read_text().splitlines():
        if m := EPOCH_LINE.match(line):
            t, elapsed = int(m.group(2)), float(m.group(4))
            if t <= last_t:  # a new run began: count the finished one
                epochs, seconds = epochs + last_t, seconds + last_s
            last_t, last_s = t, elapsed
    return int(epochs + last_t), seconds + last_s


def measure(walls: list[dict], config: dict) -> dict:
    """Per-epoch times and per-job overheads of the training jobs, and other jobs' walls.

    A group's epoch_s is per epoch of K subpaths at once: its model-epochs are counted from the
    plan, so subpaths trained one at a time (engine.batched_subpaths) are rated alike."""
    out: dict = {"job_walls_s": {}}
    for job in walls:
        out["job_walls_s"].setdefault(job["rule"], []).append(job["wall_s"])
    for rule in ("main_segment", "subpath_group"):
        jobs = [(job["wall_s"], *training_time(REPO / job["log"]))
                for job in walls if job["rule"] == rule]
        epochs = sum(e for _, e, _ in jobs)
        seconds = sum(s for _, e, s in jobs if e)
        overheads = [wall - s for wall, _, s in jobs]  # the init job (no epochs): all overhead
        if rule == "subpath_group" and epochs:
            plan, k = lrconfig.Plan(config), config["schedule"]["subpaths_per_job"]
            model_epochs = len(plan.branch_epochs) * config["schedule"]["subpath_epochs"]
            # in epochs of K at once, over the groups that finished in this call
            epochs = model_epochs / k * len(jobs) / len(plan.subpath_groups)
        out[rule] = {"jobs": len(jobs), "epochs": epochs,
                     "epoch_s": seconds / epochs if epochs else None,
                     "overhead_s": statistics.median(overheads) if overheads else None,
                     "wall_s": sum(wall for wall, _, _ in jobs)}
    return out


def other_jobs_s(measured: dict, short: dict, full: dict) -> float:
    """Wall of the non-training jobs, landscape scaled by grid points and PCA by snapshot rows
    (each shard's start-up counted as a main-path job's)."""
    walls = measured["job_walls_s"]
    total = 0.0
    for rule, values in walls.items():
        if rule in ("main_segment", "subpath_group"):
            continue
        if rule == "landscape_shard":
            overhead = measured["main_segment"]["overhead_s"]
            per_point = max(0.0, sum(values) - len(values) * overhead) / short["grid_points"]
            total += full["shards"] * overhead + full["grid_points"] * per_point
        elif rule == "pca":
            total += sum(values) * full["snapshots"] / short["snapshots"]
        else:
            total += sum(values)
    return total


def study_jobs(config: dict) -> dict:
    """Training jobs and epochs of a study: what the projection multiplies."""
    plan = lrconfig.Plan(config)
    sched, every = config["schedule"], config["trajectory"]["every_epochs"]
    return {"seeds": len(plan.seeds),
            "main_jobs": len(plan.segment_ends) + 1, "main_epochs": sched["main_epochs"],
            "group_jobs": len(plan.subpath_groups),
            "group_epochs": len(plan.subpath_groups) * sched["subpath_epochs"],
            "k": sched["subpaths_per_job"], "grid_points": plan.grid_points,
            "shards": plan.n_shards,
            "snapshots": sched["main_epochs"] // every
            + len(plan.branch_epochs) * sched["subpath_epochs"] // every}


def project(shape: dict, main_epoch_s: float, group_epoch_s: float, main_overhead_s: float,
            group_overhead_s: float, other_s: float) -> dict:
    """Serial sum over one seed's GPU jobs plus its other jobs' wall time, and the same for all
    of the study's seeds one after another on one device (`seeds` of `shape`)."""
    main = shape["main_jobs"] * main_overhead_s + shape["main_epochs"] * main_epoch_s
    groups = shape["group_jobs"] * group_overhead_s + shape["group_epochs"] * group_epoch_s
    per_seed = main + groups + other_s
    seeds = shape["seeds"]
    return {"seeds": seeds, "main_s": main, "groups_s": groups, "other_s": other_s,
            "per_seed_s": per_seed, "per_seed_min": per_seed / 60,
            "total_s": per_seed * seeds, "total_min": per_seed * seeds / 60}


def report_lines(result: dict) -> list[str]:
    """The human-readable summary of a (possibly partial) measurement."""
    short, measured, wall = result["short_study"], result["measured"], result["snakemake_wall_s"]
    main_m, group_m = measured["main_segment"], measured["subpath_group"]
    done = "finished" if result["complete"] else "cut at its budget (rerun to resume)"
    lines = [f"shortened authors' study (1 seed) through Snakemake: {done}, {wall:.0f} s wall"]
    if main_m["epoch_s"] is None or group_m["epoch_s"] is None:
        lines.append("  no finished main-path and subpath jobs in this call yet: no projection")
        return lines
    own = result["short_projected_from_run"]
    lines += [f"  main path {main_m['epoch_s']:.3f} s/epoch, K={short['k']} group "
              f"{group_m['epoch_s']:.3f} s/epoch ({group_m['epoch_s'] / short['k'] * 1000:.1f} ms"
              f" per model-epoch); per-job overhead main {main_m['overhead_s']:.1f} s, group "
              f"{group_m['overhead_s']:.1f} s; other jobs {own['other_s']:.0f} s",
              f"  projected from the run's own rates: {own['total_s']:.0f} s "
              f"({own['total_s'] / wall:.2f}x the measured wall)"]
    if "short_projected_from_bench" in result:
        lines.append(f"  projected from bench_gpu's per-epoch times: "
                     f"{result['short_projected_from_bench']['total_s']:.0f} s "
                     f"({result['projection_vs_measured']:.2f}x the measured wall; goal: within "
                     f"0.8-1.2x)")
    whole = result["authors_study_projected"]
    full = whole["shape"]
    lines.append(f"authors' whole study projected ({full['main_epochs']} main epochs, "
                 f"{full['group_jobs']} groups x {full['group_epochs'] // full['group_jobs']} "
                 f"epochs of K={full['k']}): {whole['per_seed_min']:.1f} min per seed (main "
                 f"{whole['main_s'] / 60:.1f}, subpaths {whole['groups_s'] / 60:.1f}, other jobs "
                 f"{whole['other_s'] / 60:.1f}; goal <= 10 min), {whole['total_min']:.1f} min for "
                 f"its {whole['seeds']} seeds (goal <= 30 min)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / ".gpu-data")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/lrdecay-dag-check"))
    parser.add_argument("--bench", type=Path, default=None, help="bench_gpu.json of this device")
    parser.add_argument("--subpath-epochs", type=int, default=None)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop Snakemake after this many seconds and measure what finished")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the previous call's run folder instead of resuming it")
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: checks the script")
    args = parser.parse_args()
    if args.subpath_epochs is None:
        args.subpath_epochs = 2 if args.tiny else 10
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    config = short_config(args)
    config_path = args.work / "authors-short.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = lrconfig.Plan(config).run_dir
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    short = study_jobs(config)
    full = study_jobs(lrconfig.load(REPO / "config" / "authors.yaml"))
    json_path = args.out / "dag_check.json"
    result: dict = {"device": config["device"], "tiny": args.tiny, "complete": False,
                    "snakemake_wall_s": 0.0, "short_study": short, "authors_study": full,
                    "settings": {k: config["engine"][k] for k in lrconfig.NUMERIC_ENGINE_KEYS}}
    io.write_json(json_path, result)  # a call cut before the end still leaves its plan

    log = args.work / "snakemake.out"
    logs_before = set((REPO / ".snakemake" / "log").glob("*.snakemake.log"))
    wall, complete = run_snakemake(config_path, args.cores, log, args.budget_s)
    new_logs = sorted(set((REPO / ".snakemake" / "log").glob("*.snakemake.log")) - logs_before,
                      key=lambda p: p.stat().st_mtime)
    smk_log = new_logs[-1] if new_logs else None
    # Jobs finished by earlier calls on the same run folder count too (a resumed run): the
    # measurements of every call are kept beside the run, by job log.
    calls_path = args.work / "calls.json"
    calls = json.loads(calls_path.read_text()) if calls_path.is_file() and not args.fresh \
        else {"wall_s": [], "jobs": {}}
    calls["wall_s"].append(wall)
    calls["jobs"].update({job["log"] or f"{job['rule']}-{i}": job
                          for i, job in enumerate(job_walls(smk_log) if smk_log else [])})
    io.write_json(calls_path, calls)  # atomic: the next call resumes from it
    walls, wall = list(calls["jobs"].values()), sum(calls["wall_s"])
    measured = measure(walls, config)
    result.update(complete=complete, snakemake_wall_s=wall, calls=len(calls["wall_s"]),
                  measured=measured)
    main_m, group_m = measured["main_segment"], measured["subpath_group"]
    if main_m["epoch_s"] is not None and group_m["epoch_s"] is not None:
        # The shortened run projected from its own per-epoch times and overheads (tests the
        # model: serial GPU jobs, other jobs' walls added) and, if given, from bench_gpu's.
        other = other_jobs_s(measured, short, short)
        result["short_projected_from_run"] = project(
            short, main_m["epoch_s"], group_m["epoch_s"], main_m["overhead_s"],
            group_m["overhead_s"], other)
        if args.bench and args.bench.exists():
            inputs = json.loads(args.bench.read_text())["projection_inputs"]["authors"]
            from_bench = project(short, inputs["main_epoch_s"],
                                 inputs["subpath_model_epoch_s"] * short["k"],
                                 main_m["overhead_s"], group_m["overhead_s"], other)
            result["short_projected_from_bench"] = from_bench
            result["projection_vs_measured"] = from_bench["total_s"] / wall
        whole = project(full, main_m["epoch_s"], group_m["epoch_s"], main_m["overhead_s"],
                        group_m["overhead_s"], other_jobs_s(measured, short, full))
        result["authors_study_projected"] = {**whole, "shape": full}
    result["report"] = report_lines(result)
    print("\n".join(result["report"]), flush=True)
    io.write_json(json_path, result)
    with tarfile.open(args.out / "dag_outputs.tar.gz", "w:gz") as tar:
        for path in sorted(run_dir.rglob("*")) if run_dir.exists() else []:
            if path.is_file() and (path.suffix in (".png", ".pdf", ".log", ".json")
                                   or path.name in ("metrics.csv", "decay_timing.csv")) \
                    and ".resume" not in path.parts and path.parent.name != "group-000":
                tar.add(path, arcname=str(path.relative_to(run_dir)))
        if smk_log:
            tar.add(smk_log, arcname="snakemake.log")
        tar.add(log, arcname="snakemake.out")
        tar.add(config_path, arcname=config_path.name)
    print(f"wrote {json_path} and {args.out / 'dag_outputs.tar.gz'}")
    if not complete:
        sys.exit(3)  # cut: the caller sees it, and the next call resumes


if __name__ == "__main__":
    main()
