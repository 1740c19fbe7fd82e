"""The whole DAG through the snakemake CLI on the tiny preset, in a temporary folder."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lrdecay import config as lrconfig
from lrdecay import io, resources

from .conftest import REPO, TINY


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(TINY),
               "--config", f"output_dir={workdir / 'results'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir / "results" / "tiny"


def test_every_output_exists_and_is_consistent(tiny_run: Path) -> None:
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    main = metrics[metrics["path"] == "main"]
    assert main["epoch"].tolist() == list(range(0, 7))  # epoch 0 (init) .. 6
    sub = metrics[metrics["path"] == "subpath"]
    assert sorted(sub["branch_epoch"].unique()) == [2, 4, 6]
    assert len(sub) == 3 * 4  # each subpath: branch point + 3 epochs
    assert np.isfinite(metrics[["train_loss", "test_loss"]].to_numpy()).all()
    # a subpath starts exactly at the main path's state: same losses at the branch epoch
    start = sub[sub["epochs_after_decay"] == 0].set_index("branch_epoch")["test_loss"]
    at_branch = main.set_index("epoch")["test_loss"].loc[start.index]
    np.testing.assert_allclose(start.to_numpy(), at_branch.to_numpy(), rtol=1e-6)

    main_traj, meta = io.load_array(tiny_run / "trajectories" / "main.npy", "rerun")
    assert meta["epochs"] == list(range(0, 7)) and main_traj.shape[0] == 7
    coords = pd.read_csv(tiny_run / "pca" / "coordinates.csv")
    assert len(coords) == 7 + 3 * 4
    variance = pd.read_csv(tiny_run / "pca" / "explained_variance.csv")
    assert 0 < variance["cumulative_ratio"].iloc[-1] <= 1 + 1e-9
    grid = pd.read_csv(tiny_run / "landscape" / "grid.csv")
    assert len(grid) == 5 * 4 and np.isfinite(grid["test_loss"]).all()
    timing = pd.read_csv(tiny_run / "decay_timing.csv")
    assert timing["branch_epoch"].tolist() == [2, 4, 6]
    for name in ["fig1a_learning_curves", "fig1b_subpath_train_loss", "fig1c_subpath_test_loss",
                 "fig1d_decay_timing", "fig2a_landscape_train", "fig2b_landscape_test"]:
        for ext in ("png", "pdf"):
            assert (tiny_run / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert not any((tiny_run / ".resume").iterdir())  # finished jobs leave no partial state


def test_second_run_has_nothing_to_do(tiny_run: Path) -> None:
    result = snakemake(tiny_run.parent.parent, "-n", "--cores", "1")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_same_config_gives_same_numbers(tiny_run: Path, tmp_path: Path) -> None:
    """CPU determinism across whole runs (every random choice is seeded from config)."""
    result = snakemake(tmp_path, "--cores", "2", f"{tmp_path}/results/tiny/metrics.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    first = pd.read_csv(tiny_run / "metrics.csv")
    second = pd.read_csv(tmp_path / "results" / "tiny" / "metrics.csv")
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    # checkpoints too, byte for byte (DVC hashes them: a rerun must not look like a change)
    for state in sorted((tiny_run / "main").rglob("*.pt")):
        twin = tmp_path / "results" / "tiny" / state.relative_to(tiny_run)
        assert state.read_bytes() == twin.read_bytes(), state


def test_lint_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


# --- resources: every job's request is above its measured peak, and not absurdly above ----------

def test_memory_requests_cover_the_measured_peak(tiny_run: Path) -> None:
    """Each job logs its peak RSS (lrdecay.logs); the rule's mem_mb must hold it with room to
    spare but not ask for several times more. A request that forgot the interpreter and torch
    (~600 MB) fails the lower bound; a fixed 8 GB for PCA fails the upper one."""
    costs = resources.JobCosts(lrconfig.load(TINY), gpu=False)
    peaks = {}
    for log_file in sorted((tiny_run / "logs").glob("*.log")):
        found = re.findall(r"peak memory (\d+) MB", log_file.read_text())
        rule = re.sub(r"-[\d.]+$", "", log_file.stem)
        if rule.startswith("toy_"):
            continue  # toy rules (toy.smk) keep their own fixed requests
        assert found, f"{log_file} does not log the job's peak memory"
        peaks[log_file.stem] = (rule, int(found[-1]))
    assert {rule for rule, _ in peaks.values()} >= {
        "prepare_data", "main_segment", "subpath_group", "gather_training", "pca",
        "landscape_shard", "landscape_gather", "figure1", "figure2"}
    for job, (rule, peak) in peaks.items():
        requested = costs.mem_mb(rule)
        assert peak < requested < 2.5 * peak, f"{job}: peak {peak} MB, mem_mb {requested}"
        assert costs.mem_mb(rule, attempt=2) > requested  # a retry asks for more
        assert costs.runtime(rule, attempt=2) > costs.runtime(rule)


# --- errors reach the rule's log file -----------------------------------------------------------

def _failing_run(tmp_path: Path, overrides: dict, target: str) -> tuple[str, str]:
    extra = tmp_path / "override.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    extra.write_text(yaml.safe_dump(overrides))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(TINY), str(extra),
               "--config", f"output_dir={tmp_path / 'results'}", "--cores", "1",
               str(tmp_path / "results" / overrides["run_name"] / target)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    return result.stdout + result.stderr, str(tmp_path / "results" / overrides["run_name"])


def test_divergence_and_missing_data_are_in_the_job_logs(tmp_path: Path) -> None:
    """Snakemake shows (and SLURM keeps) a failed job's log file: the message saying what to fix
    and the traceback must be there, not only on stderr."""
    output, run = _failing_run(tmp_path / "a", {"run_name": "diverge",
                                          "optimizer": {"main_lr": 1.0e6}}, "main/segment-0003")
    log_file = Path(run, "logs", "main_segment-0003.log")
    assert log_file.exists(), output[-3000:]
    text = log_file.read_text()
    assert "diverged" in text and "Lower the learning rate" in text, text
    assert "Traceback" in text and "job failed" in text

    output, run = _failing_run(tmp_path / "b", {"run_name": "nocifar", "data": {
        "name": "cifar10", "root": str(tmp_path / "nowhere"), "download": False,
        "train_per_class": 2, "test_per_class": 2}}, "data/dataset.pt")
    log_file = Path(run, "logs", "prepare_data.log")
    assert log_file.exists(), output[-3000:]
    text = log_file.read_text()
    assert "CIFAR-10 not found under" in text and "data.download: true" in text, text
    assert "Traceback" in text


# --- profiles, as Snakemake itself loads them ---------------------------------------------------

def _profile_args(capsys, *argv: str):
    """Arguments after Snakemake's own profile loading (snakemake.cli.parse_args), run from the
    repository root as a user would."""
    from snakemake.cli import parse_args

    with contextlib.chdir(REPO):
        _, args = parse_args(list(argv))
    return args, capsys.readouterr().err


def test_slurm_profile_is_not_overridden_by_a_workflow_profile(capsys) -> None:
    """Snakemake loads profiles/default (next to the Snakefile) as the workflow profile on top of
    --profile; its `resources: gpu: 1` then ran one GPU job at a time on a cluster."""
    args, err = _profile_args(capsys, "--profile", "profiles/slurm", "-n")
    assert "workflow specific profile" not in err, err
    assert args.executor == "slurm" and args.jobs == 50
    assert "gpu" not in (args.resources or {}), args.resources
    assert args.latency_wait == 60 and args.keep_going is True and args.retries == 1
    ci, _ = _profile_args(capsys, "--profile", "profiles/slurm-ci", "-n")
    assert "gpu" not in (ci.resources or {}) and ci.jobs == 4
    local, _ = _profile_args(capsys, "--profile", "profiles/local", "-n")
    assert "gpu" in local.resources and local.latency_wait == 5


def test_profiles_name_only_existing_rules() -> None:
    """set-resources for a rule that does not exist is silently ignored by Snakemake."""
    rules = set(re.findall(r"(?m)^rule (\w+):", "".join(
        p.read_text() for p in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")])))
    for profile in (REPO / "profiles").glob("*/config.v8+.yaml"):
        text = profile.read_text()
        named = set(re.findall(r"(?m)^#?\s{2,4}(\w+):\s*$", text.split("set-resources:", 1)[-1]))
        if "set-resources:" in text:
            assert named and named <= rules, f"{profile}: {named - rules}"


# --- conventions --------------------------------------------------------------------------------

PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def test_conda_env_lists_every_imported_package() -> None:
    """`--sw-deployment-method conda` jobs fail on an import the environment lacks."""
    env = yaml.safe_load((REPO / "workflow" / "envs" / "lrdecay.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {re.split(r"[<>=!~ ]", spec)[0].lower() for spec in pip}
    imported = set()
    for path in [*(REPO / "lrdecay").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"lrdecay", "snakemake"}
    missing = {PIP_NAMES.get(name, name) for name in third_party} - listed
    assert not missing, f"add to workflow/envs/lrdecay.yaml: {sorted(missing)}"


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_slurm_partitions_keep_cpu_jobs_off_the_gpu_partition(tmp_path: Path, device: str) -> None:
    """A dry run through profiles/slurm, as Snakemake loads it: with device cuda the training and
    landscape jobs go to the GPU partition and every other job to the CPU one; with device cpu
    no job goes to the GPU partition."""
    env = {**os.environ, "LRDECAY_SLURM_ACCOUNT": "", "LRDECAY_SLURM_PARTITION": "cpuq",
           "LRDECAY_SLURM_GPU_PARTITION": "gpuq"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile",
         str(REPO / "profiles" / "slurm"), "-n", "--forceall", "--directory", str(tmp_path),
         "--configfile", str(TINY), "--config", f"device={device}"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    partition = {}
    for rule, resources_line in re.findall(r"(?ms)^rule (\w+):\n.*?^\s+resources: ([^\n]*)",
                                           result.stdout + result.stderr):
        partition.setdefault(rule, set()).update(re.findall(r"slurm_partition=(\w+)",
                                                            resources_line))
    gpu_rules = {"main_segment", "subpath_group", "landscape_shard"}
    assert gpu_rules <= set(partition) and "pca" in partition
    for rule, found in partition.items():
        expected = "gpuq" if device == "cuda" and rule in gpu_rules else "cpuq"
        assert found == {expected}, (rule, found)
