"""The CPU twins of every benchmark and device script: a crash in them must fail CI, not a GPU
window (issue 27). Each runs as a user runs it, in a copy of the checkout, and its output files
and values are checked."""

from __future__ import annotations

import json
import math
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN, checkout_env, working_tree_copy, write_cifar_bin

PY = str(VENV_BIN / "python")


def run(cwd: Path, *args: str, env: dict | None = None, timeout: int = 1200) -> tuple[int, str]:
    proc = subprocess.run(args, cwd=cwd, env={**checkout_env(cwd), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("checkout")
    working_tree_copy(repo)
    return repo


def test_bench_cpu_twin_writes_its_ratios(checkout: Path, tmp_path: Path) -> None:
    rc, out = run(checkout, PY, "-m", "benchmarks.bench_cpu", "--synthetic", "10", "--steps",
                  "1", "--reps", "1", "--workers", "0", "--threads", "1", "--out", str(tmp_path))
    assert rc == 0, out[-4000:]
    result = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert result["images"] == 100 and result["steps_per_epoch"] == 1
    for section in ("data_epoch_s", "whole_epoch_s"):
        times = result[section]
        assert times["baseline"] > 0 and times["engine"] > 0
        assert math.isclose(times["ratio"], times["baseline"] / times["engine"])


def test_gpu_check_twin_runs_every_stage_and_its_dag_resumes(checkout: Path,
                                                             tmp_path: Path) -> None:
    """A dag check cut by its budget writes a partial JSON and exits 3; gpu_check.sh (CPU twin)
    then runs every stage, its DAG stage resuming the cut run, and leaves at most 8 plain files
    whose numbers count the authors' preset's three seeds."""
    data, out, work = tmp_path / "data", tmp_path / "out", tmp_path / "work"
    write_cifar_bin(data, n=50)  # 25 training, 5 test images per class
    rc, log = run(checkout, PY, "-m", "benchmarks.dag_check", "--tiny", "--data", str(data),
                  "--out", str(out), "--work", str(work), "--budget-s", "8")
    assert rc == 3, log[-4000:]
    partial = json.loads((out / "dag_check.json").read_text())
    assert partial["complete"] is False and partial["calls"] == 1
    assert "the same command resumes the rest" in log

    rc, log = run(checkout, "bash", "benchmarks/gpu_check.sh",
                  env={"GPU_CHECK_TINY": "1", "OUT": str(out), "PYTHON": PY,
                       "GPU_CHECK_DATA": str(data), "GPU_CHECK_WORK": str(work)})
    assert rc == 0, log[-6000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_gpu.json", "dag_check.json", "dag_outputs.tar.gz", "gpu_check.log",
                     "gpu_profile.json"], files
    assert all((out / f).is_file() for f in files)

    bench = json.loads((out / "bench_gpu.json").read_text())
    assert bench["complete"] is True
    authors = bench["projection"]["authors"]
    assert authors["seeds"] == 3  # config/authors.yaml runs three seeds
    assert authors["model_epochs"] == 3 * authors["model_epochs_per_seed"] == 3 * 83_000
    assert math.isclose(authors["total_s"], 3 * authors["per_seed_s"])

    profile = json.loads((out / "gpu_profile.json").read_text())
    for k in ("1", "2"):
        row = profile["by_k"][k]
        assert row["kernels_per_step"] > 10 and row["top"]
        assert 0 < row["busy_ms_per_step"] <= 1.05 * row["wall_ms_per_step"]

    dag = json.loads((out / "dag_check.json").read_text())
    assert dag["complete"] is True and dag["calls"] >= 2  # resumed, not restarted
    assert dag["short_study"]["seeds"] == 1
    whole = dag["authors_study_projected"]
    assert whole["seeds"] == 3 and math.isclose(whole["total_s"], 3 * whole["per_seed_s"])
    for rule in ("main_segment", "subpath_group"):
        assert dag["measured"][rule]["epoch_s"] > 0
    with tarfile.open(out / "dag_outputs.tar.gz") as tar:
        names = tar.getnames()
    assert "snakemake.log" in names and any(n.endswith("decay_timing.csv") for n in names)


def test_reference_run_twin_packs_one_archive(checkout: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, log = run(checkout, "bash", "benchmarks/reference_run.sh",
                  "schedule.segment_epochs=6", "schedule.last_branch_epoch=4",
                  "schedule.subpaths_per_job=5", "landscape.points=[4, 4]", "landscape.shards=1",
                  env={"PRESET": "config/tiny.yaml", "DATA": "none", "OUT": str(out),
                       "PYTHON": PY, "CORES": "2", "NAME": "tiny"})
    assert rc == 0, log[-6000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "reference-config.yaml", "reference-tiny.tar.gz", "snakemake.log"]
    with tarfile.open(out / "reference-tiny.tar.gz") as tar:
        names = set(tar.getnames())
        provenance = json.load(tar.extractfile("tiny/provenance.json"))
    assert {"tiny/claims.csv", "tiny/provenance.json", "tiny/summary.json"} <= names
    assert not any(n.endswith(".pt") or n.endswith(".npy") for n in names)
    assert "schedule.last_branch_epoch=4" in provenance["command"]
    assert provenance["config"]["schedule"]["last_branch_epoch"] == 4


def test_authors_preset_has_few_gpu_jobs_per_seed() -> None:
    """Fewer, longer GPU jobs (issue 27): at most 10 per seed for the authors' preset."""
    from lrdecay.config import validate as lrconfig

    plan = lrconfig.Plan(lrconfig.load(REPO / "config" / "authors.yaml"))
    per_seed = len(plan.segment_ends) + 1 + len(plan.subpath_groups) + plan.n_shards
    assert per_seed <= 10, per_seed


def test_quick_dag_reports_the_longest_silence_of_a_job_log(tmp_path: Path) -> None:
    """benchmarks/quick_dag.py's check of 'no job silent for more than 30 s': the longest gap
    between two timestamped lines of a job's log (untimed lines, such as a traceback's, skipped),
    the job's start (end line minus its stated wall) counted."""
    from benchmarks.quick_dag import longest_silence

    log = tmp_path / "job.log"
    log.write_text("2026-12-04 10:00:05,120 INFO lrdecay.toy.checks: part geometry done\n"
                   "  an untimed line\n"
                   "2026-12-04 10:00:36,500 INFO lrdecay.toy.checks: part lemma done\n"
                   "2026-12-04 10:00:50,000 INFO lrdecay: job ended after 50.0 s; peak memory"
                   " 90 MB\n")
    assert longest_silence(log) == 31.0
    log.write_text("2026-12-04 10:00:40,000 INFO lrdecay: job ended after 36.6 s; peak memory"
                   " 90 MB\n")  # a job that says nothing until it ends: silent all along
    assert longest_silence(log) == 36.6
    log.write_text("no timed line\n")
    assert longest_silence(log) == 0.0


def test_quick_dag_reads_each_jobs_cpu_time_from_its_end_line(tmp_path: Path) -> None:
    """Each job's log ends with its CPU time (lrdecay.core.logs.END_OF_JOB), which quick_dag sums
    per rule: the measure on a shared machine, where walls follow the load. A log of an older commit
    (no CPU in its end line) gives None, not 0; the job's own CPU clock, not the wall, is logged."""
    import time

    from benchmarks.quick_dag import job_cpu, rule_cpu
    from lrdecay.core import logs

    log = tmp_path / "job.log"
    line = logs.END_OF_JOB.format(wall=50.0, peak=90, cpu=12.34)
    log.write_text(f"2026-12-04 10:00:50,000 INFO lrdecay: {line}\n")
    assert job_cpu(log) == 12.3
    log.write_text("2026-12-04 10:00:40,000 INFO lrdecay: job ended after 36.6 s; peak memory"
                   " 90 MB\n")
    assert job_cpu(log) is None
    jobs = [{"rule": "a", "cpu_s": 1.5}, {"rule": "b", "cpu_s": 4.0}, {"rule": "a", "cpu_s": 3.0},
            {"rule": "c", "cpu_s": None}]
    assert rule_cpu(jobs) == "a 4.5, b 4.0"
    before, clock = logs.cpu_s(), time.process_time()
    while time.process_time() - clock < 0.2:
        pass  # 0.2 CPU-s busy, however loaded the machine: the logged clock moves with it
    busy = logs.cpu_s() - before
    time.sleep(0.3)  # and a sleep, which a wall clock would count, does not move it
    assert 0.15 < busy < 0.35 and logs.cpu_s() - before - busy < 0.05, busy
