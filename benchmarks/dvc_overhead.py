"""`dvc repro` against `snakemake --cores N` on the same tiny study: what one DVC stage costs.

    .venv/bin/python -m benchmarks.dvc_overhead [--reps 3] [--cores 2] [--serial] [--quick]

DVC runs its stages one after another, each as its own `snakemake` process (one job, or a rule's
sibling jobs of one seed side by side), so every stage pays Snakemake's start-up (parsing the
Snakefile, validating the config, building the stage's DAG) where a plain `snakemake --cores N` run
pays it once and runs every independent job side by side. Each repetition builds the tiny study of
tests/test_dvc.py (config/tiny.yaml with fewer jobs) from scratch in fresh copies of this working
tree: `snakemake --cores N` in one, `dvc repro` (after generating and committing its dvc.yaml, not
timed) in another, and with --serial `snakemake --cores 1` in a third, which separates the two
costs: DVC's per-stage start-ups (dvc repro vs --cores 1) and running one job at a time (--cores 1
vs --cores N). The order of the tools rotates between repetitions. --quick builds the quick preset
(config.yaml) instead, whose jobs are longer, so the same per-stage cost weighs less.

For each run it records the wall time and the CPU time of every process it started (user +
system, children included): on a machine shared with other work the wall time follows the load,
the CPU time much less, and the CPU time shows the extra work DVC's stages do whatever the
parallelism. It prints both, their ratios, the load average, and the wall time of one stage
command with nothing to do (the fixed cost each stage pays); then the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import checkout_env as env
from tests.conftest import make_config_yaml_tiny as tiny_config
from tests.conftest import working_tree_copy


@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # user + system seconds of the command and all its waited-for descendants


def run(cwd: Path, *args: str) -> tuple[Timed, str]:
    """Run a command in `cwd` (with the venv's tools on PATH); its times and output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    proc = subprocess.run(args, cwd=cwd, env=env(cwd), capture_output=True, text=True)
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed in {cwd}:\n{output[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu), output


def fresh_copy(dest: Path, quick: bool = False) -> None:
    """This working tree as the tiny study (or the quick preset), in a git repository (DVC needs
    one)."""
    working_tree_copy(dest)
    if not quick:
        tiny_config(dest)
    run(dest, "git", "init", "-q", "-b", "main")


def time_snakemake(work: Path, cores: int, quick: bool) -> Timed:
    fresh_copy(work, quick)
    return run(work, "snakemake", "--cores", str(cores))[0]


def time_dvc(work: Path, quick: bool) -> tuple[Timed, int, str]:
    """Times of `dvc repro`, its number of stages, and one stage's command (for the no-op)."""
    fresh_copy(work, quick)
    run(work, sys.executable, "-m", "lrdecay.tooling.dvcgen")
    run(work, "git", "add", "-A")
    run(work, "git", "commit", "-q", "-m", "tiny study")
    timed, output = run(work, "dvc", "repro")
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert ran == set(stages), f"dvc repro ran {sorted(ran)}, not every stage"
    return timed, len(stages), stages["figure1"]["cmd"]


def summary(times: dict[str, Timed], cores: int) -> str:
    """The times of one repetition (or the medians) and their ratios, in words."""
    snake, dvc = times["snakemake"], times["dvc"]
    text = (f"wall: snakemake --cores {cores} {snake.wall:.1f} s, dvc repro {dvc.wall:.1f} s, "
            f"ratio {dvc.wall / snake.wall:.2f}")
    if "serial" in times:
        serial = times["serial"]
        text += (f"; snakemake --cores 1 {serial.wall:.1f} s (dvc repro / --cores 1 "
                 f"{dvc.wall / serial.wall:.2f}, --cores 1 / --cores {cores} "
                 f"{serial.wall / snake.wall:.2f})")
    text += (f"\n  CPU: snakemake --cores {cores} {snake.cpu:.1f} s, dvc repro {dvc.cpu:.1f} s, "
             f"ratio {dvc.cpu / snake.cpu:.2f}")
    if "serial" in times:
        text += f"; snakemake --cores 1 {times['serial'].cpu:.1f} s"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--serial", action="store_true", help="also time snakemake --cores 1")
    parser.add_argument("--quick", action="store_true", help="the quick preset, not the tiny one")
    args = parser.parse_args()
    tools = ["snakemake", "dvc", *(["serial"] if args.serial else [])]
    runs: dict[str, list[Timed]] = {tool: [] for tool in tools}
    noop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lrdecay-dvc-bench-") as tmp:
        for rep in range(args.reps):
            loads = [os.getloadavg()[0]]
            for tool in tools[rep % len(tools):] + tools[:rep % len(tools)]:  # rotate the order
                work = Path(tmp) / f"{tool}-{rep}"
                if tool == "dvc":
                    timed, n_stages, stage_cmd = time_dvc(work, args.quick)
                    # The same stage command again, its output present: start-up only.
                    noop.append(run(work, *stage_cmd.split())[0].wall)
                else:
                    timed = time_snakemake(work, args.cores if tool == "snakemake" else 1,
                                           args.quick)
                runs[tool].append(timed)
                loads.append(os.getloadavg()[0])
                shutil.rmtree(work)
            print(f"rep {rep} ({n_stages} stages; load average {min(loads):.1f}-"
                  f"{max(loads):.1f}): {summary({t: r[-1] for t, r in runs.items()}, args.cores)}"
                  f"\n  one stage with nothing to do: {noop[-1]:.2f} s wall", flush=True)
    medians = {tool: Timed(statistics.median(r.wall for r in rs),
                           statistics.median(r.cpu for r in rs)) for tool, rs in runs.items()}
    print(f"median over {args.reps}: {summary(medians, args.cores)}\n  one stage with nothing to "
          f"do: {statistics.median(noop):.2f} s wall (`{stage_cmd}`)")


if __name__ == "__main__":
    main()
