"""Package a finished run as reference results: its small tables and figures plus a provenance file.

A reference run (issue 9: the authors' study on a GPU) is committed to the repository, so it must
be small (no checkpoints, trajectories or datasets) and say exactly how it was made: the device,
the library versions, the commit, the config and its hash, the command, and the wall time of every
stage, read from the job logs (lrdecay.core.logs ends each log with the job's wall time).
"""

from __future__ import annotations

import gzip
import json
import platform
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from lrdecay.core import io
from lrdecay.core.basics import config_hash
from lrdecay.study import layout

# What a reference keeps: results people read. Everything else (checkpoints, trajectories, the
# PCA basis, the dataset, resume states) is large and rebuilt by the pipeline.
KEPT_SUFFIXES = {".csv", ".json", ".png", ".pdf"}
SKIPPED_PARTS = {layout.RESUME, ".locks", ".snakemake", "data", layout.MAIN_DIR,
                 layout.SUBPATHS_DIR, "trajectories"}
MAX_FILE_BYTES = 5 * 2**20
WALL_LINE = re.compile(r"job ended after ([\d.]+) s; peak memory (\d+) MB")
PROVENANCE = "provenance.json"


def kept_files(run_dir: Path) -> tuple[list[Path], list[str]]:
    """Result files under `run_dir` worth committing, and the ones left out with the reason."""
    kept, left_out = [], []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(run_dir)
        if SKIPPED_PARTS & set(relative.parts[:-1]) or path.suffix not in KEPT_SUFFIXES:
            continue
        if path.suffix == ".json" and path.with_suffix("").is_file():
            continue  # integrity record of a file a reference does not keep (.npy, .pt, .npz)
        if path.match(layout.SHARD.glob) or path.parent.name.startswith("gamma-"):
            continue  # pieces of landscape/grid.csv and of toy/checks.csv
        if path.stat().st_size > MAX_FILE_BYTES and path.suffix != ".csv":
            left_out.append(f"{relative} ({path.stat().st_size} bytes > {MAX_FILE_BYTES})")
            continue
        kept.append(relative)
    return kept, left_out


def stage_times(run_dir: Path) -> dict[str, dict]:
    """Per stage (rule): number of jobs, summed and longest wall time, and the largest peak
    memory, from the `job ended after` line of every job log under `run_dir`."""
    stages: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "longest_s": 0.0,
                                                   "peak_mb": 0})
    for log_file in sorted(run_dir.rglob("logs/*.log")):
        found = WALL_LINE.findall(log_file.read_text(errors="replace"))
        if not found:
            continue  # a job that died before its end (its log says why), or a foreign log
        wall, peak = float(found[-1][0]), int(found[-1][1])
        stage = stages[log_file.stem.split("-")[0]]  # rule names hold no "-"; gammas may
        stage["jobs"] += 1
        stage["wall_s"] = round(stage["wall_s"] + wall, 1)
        stage["longest_s"] = max(stage["longest_s"], wall)
        stage["peak_mb"] = max(stage["peak_mb"], peak)
    return dict(sorted(stages.items()))


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def device_description(device: str) -> str:
    """The accelerator by name (CUDA), else the CPU model: what the timings were measured on."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}"


def provenance(config: dict, run_dir: Path, command: str, wall_s: float | None) -> dict:
    """Everything needed to tell how a reference was made and to make it again."""
    import snakemake
    import torch

    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "wall_s": wall_s,
        "device": device_description(config.get("device", "cpu")),
        "torch": torch.__version__,
        "snakemake": snakemake.__version__,
        "python": platform.python_version(),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "config_hash": config_hash(config),
        "config": config,
        "stages": stage_times(run_dir),
    }


def _copy(source: Path, target: Path) -> Path:
    """Copy a result file; a large table goes gzip-compressed (pandas reads .csv.gz as it is)."""
    if source.suffix == ".csv" and source.stat().st_size > MAX_FILE_BYTES:
        target = target.with_name(target.name + ".gz")
        with source.open("rb") as plain, gzip.GzipFile(target, "wb", mtime=0) as packed:
            shutil.copyfileobj(plain, packed)
        return target
    shutil.copy2(source, target)
    return target


def package(config: dict, run_dir: str | Path, dest: str | Path, command: str,
            wall_s: float | None = None) -> Path:
    """Copy the run's result files to `dest` (replacing an older reference there) and write
    `dest/provenance.json`. The new reference is built beside `dest` and moved into place
    (lrdecay.core.io.atomic_dir), so a failure leaves the previous one whole and no half-built
    copy."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "claims.csv").exists():
        raise FileNotFoundError(f"{run_dir} holds no claims.csv: finish the run first "
                                f"(snakemake --configfile ... --cores N), then package it")
    kept, left_out = kept_files(run_dir)
    with io.atomic_dir(dest) as staging:
        files = []
        for relative in kept:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            files.append(_copy(io.guard(run_dir / relative, run_dir), staging / relative))
        for name in [f for f in files if f.stat().st_size > MAX_FILE_BYTES]:
            left_out.append(f"{name.relative_to(staging)} ({name.stat().st_size} bytes > "
                            f"{MAX_FILE_BYTES} even compressed)")
            name.unlink()
            files.remove(name)
        record = provenance(config, run_dir, command, wall_s)
        record["files"] = [str(f.relative_to(staging)) for f in files]
        record["left_out"] = left_out
        (staging / PROVENANCE).write_text(json.dumps(record, indent=1, default=str) + "\n")
    return dest / PROVENANCE
