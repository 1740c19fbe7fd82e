"""The whole DAG through the snakemake CLI on the tiny preset, in a temporary folder."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lrdecay.config import resources
from lrdecay.config import validate as lrconfig
from lrdecay.core import io

from .conftest import REPO, TINY, edit_config_yaml, sh, working_tree_copy


def snakemake(workdir: Path, *args: str, timeout: int = 600,
              **config: str) -> subprocess.CompletedProcess:
    """Snakemake on the tiny preset (one seed) in `workdir`; `config` items are more --config
    overrides (e.g. seeds=SEEDS)."""
    overrides = [f"{key}={value}" for key, value in config.items()]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(TINY),
               "--config", f"output_dir={workdir / 'results'}", *overrides, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


SEEDS = "[0, 1]"


def jobs_run(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in Snakemake's output (its job list)."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", output):
        found = re.search(r"^(?:local)?rule (\w+):", block, re.MULTILINE)
        if found:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            pairs = dict(w.split("=", 1) for w in wildcards.group(1).split(", ")) \
                if wildcards else {}
            jobs.append((found.group(1), pairs))
    return jobs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny study with seed 0, then with seeds [0, 1] in the same folder (a seed added)."""
    workdir = tmp_path_factory.mktemp("workflow")
    first = snakemake(workdir, "--cores", "2")
    assert first.returncode == 0, first.stderr[-5000:]
    run = workdir / "results" / "tiny"
    seed0 = sorted(p for p in (run / "seed-0").rglob("*") if p.is_file() and "logs" not in p.parts)
    stamps = {p: p.stat().st_mtime_ns for p in seed0}
    second = snakemake(workdir, "--cores", "2", seeds=SEEDS)
    assert second.returncode == 0, second.stderr[-5000:]
    (run / "second-run.log").write_text(second.stdout + second.stderr)  # for the test below
    assert stamps == {p: p.stat().st_mtime_ns for p in seed0}, "seed 0's files were rewritten"
    return run


def test_adding_a_seed_reruns_no_job_of_the_other_seeds(tiny_run: Path) -> None:
    """The second run (seeds [0] -> [0, 1]) ran seed 1's whole study and the run-level tables,
    and no job of seed 0: a seed's jobs and params depend on that seed alone. A param that held
    the seed list (or an input shared across seeds) would rerun seed 0's training here."""
    jobs = jobs_run((tiny_run / "second-run.log").read_text())
    seeded = [(rule, w["seed"]) for rule, w in jobs if "seed" in w]
    assert seeded and {seed for _, seed in seeded} == {"1"}, seeded
    assert {rule for rule, _ in seeded} >= {"main_segment", "subpath_group", "gather_training",
                                             "decay_timing", "pca"}
    assert "landscape_shard" not in {rule for rule, _ in seeded}  # the first seed's only
    assert {"figure1", "claims", "summary"} <= {rule for rule, _ in jobs}
    assert "prepare_data" not in {rule for rule, _ in jobs}  # one dataset for every seed
    # ... and a third seed, planned from the finished run: again only its own jobs
    planned = snakemake(tiny_run.parent.parent, "-n", "--cores", "1", seeds="[0, 1, 2]")
    assert planned.returncode == 0, planned.stderr[-3000:]
    seeds = {w["seed"] for _, w in jobs_run(planned.stdout + planned.stderr) if "seed" in w}
    assert seeds == {"2"}, seeds


def test_adding_a_seed_changes_no_dvc_stage_of_the_other_seeds(tmp_path: Path) -> None:
    """The same under DVC (dvc.yaml generated from the DAG, lrdecay.tooling.dvcgen): seeds [0] ->
    [0, 1] in config.yaml leaves seed 0's stages (deps, params, outs) as they are, so `dvc repro`
    reruns none of them; seed 1 gets its own stages, and only the run-level stages that read
    every seed change. A seed-0 job with the seed list as a param would list `seeds` here."""
    repo = tmp_path / "repo"
    working_tree_copy(repo)

    def stages() -> dict:
        sh(repo, "python", "-m", "lrdecay.tooling.dvcgen")
        return yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]

    before = stages()
    edit_config_yaml(repo, seeds=[0, 1])
    after = stages()
    per_seed = [name for name in before if re.match(r"[a-z_]+-0(-|$)", name)]
    assert {name.split("-")[0] for name in per_seed} >= {
        "main_segment", "subpath_group", "gather_training", "decay_timing", "pca"}
    assert [name for name in per_seed if after.get(name) != before[name]] == []
    # DVC records param values in dvc.lock: a seed-0 stage must not list the seed list at all
    listed = {name: sections for name in per_seed for entry in before[name].get("params", [])
              for sections in entry.values()}
    assert not [name for name, sections in listed.items() if "seeds" in sections], listed
    added = set(after) - set(before)
    assert added and {name.replace("-1", "-0", 1) for name in added} <= set(per_seed)
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"run_tables", "claims", "summary"}, changed


def test_every_output_exists_and_is_consistent(tiny_run: Path) -> None:
    for seed in (0, 1):
        out = tiny_run / f"seed-{seed}"
        metrics = pd.read_csv(out / "metrics.csv")
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

        main_traj, meta = io.load_array(out / "trajectories" / "main.npy", "rerun")
        assert meta["epochs"] == list(range(0, 7)) and main_traj.shape[0] == 7
        coords = pd.read_csv(out / "pca" / "coordinates.csv")
        assert len(coords) == 7 + 3 * 4
        variance = pd.read_csv(out / "pca" / "explained_variance.csv")
        assert 0 < variance["cumulative_ratio"].iloc[-1] <= 1 + 1e-9
        timing = pd.read_csv(out / "decay_timing.csv")
        assert timing["branch_epoch"].tolist() == [2, 4, 6]
        assert not any((out / ".resume").iterdir())  # finished jobs leave no partial state
    grid = pd.read_csv(tiny_run / "seed-0" / "landscape" / "grid.csv")
    assert len(grid) == 5 * 4 and np.isfinite(grid["test_loss"]).all()
    assert not (tiny_run / "seed-1" / "landscape").exists()  # Figure 2 shows the first seed


def test_seeds_differ_and_the_run_table_aggregates_them(tiny_run: Path) -> None:
    """Two seeds train differently (a bug that trained both with one seed gives equal tables),
    and the run's decay_timing.csv holds, per branch epoch and quantity, the mean and sample
    std of the two seeds' tables, computed here by hand."""
    tables = [pd.read_csv(tiny_run / f"seed-{s}" / "decay_timing.csv") for s in (0, 1)]
    a, b = (t["subpath_final_test_loss"].to_numpy() for t in tables)
    assert (np.abs(a - b) > 1e-6).all(), (a, b)
    first = [pd.read_csv(tiny_run / f"seed-{s}" / "metrics.csv") for s in (0, 1)]
    assert not np.allclose(first[0]["test_loss"], first[1]["test_loss"])
    aggregate = pd.read_csv(tiny_run / "decay_timing.csv")
    checked = 0
    for column in ("subpath_final_test_loss", "subpath_final_train_loss",
                   "main_test_loss_at_branch", "main_test_loss_at_total_epoch"):
        for branch in (2, 4, 6):
            values = [float(t.set_index("branch_epoch").loc[branch, column]) for t in tables]
            row = aggregate[(aggregate.branch_epoch == branch) & (aggregate.quantity == column)]
            if np.isnan(values).all():  # the control beyond the main path's end: no row
                assert row.empty
                continue
            mean, std = (values[0] + values[1]) / 2, abs(values[0] - values[1]) / np.sqrt(2)
            assert row["n_seeds"].item() == 2
            assert row["mean"].item() == pytest.approx(mean, rel=1e-12)
            assert row["std"].item() == pytest.approx(std, rel=1e-9)
            assert row["ci_low"].item() < mean < row["ci_high"].item()
            checked += 1
    assert checked == 10  # 4 quantities x 3 branches, less the 2 uncontrolled ones
    claims = pd.read_csv(tiny_run / "claims.csv")
    assert claims["interval_over"].str.startswith("seeds (n = 2)").all()
    summary = json.loads((tiny_run / "summary.json").read_text())
    mean_2 = aggregate[(aggregate.branch_epoch == 2)
                       & (aggregate.quantity == "subpath_final_test_loss")]["mean"].item()
    assert summary["decay_timing"]["decay_at_0002"]["subpath_final_test_loss"] == pytest.approx(
        mean_2)


def _png(path: Path) -> np.ndarray:
    from matplotlib import image

    return image.imread(path)


def test_figures_are_drawn_from_the_tables(tiny_run: Path) -> None:
    """Each PNG is a one-column figure with ink on it (not blank, not a stub); Figure 1d plots
    the run's decay_timing.csv (the means across seeds) and shades the interval of each."""
    from lrdecay.analysis import figures

    for name in FIGURES:
        pixels = _png(tiny_run / "figures" / f"{name}.png")
        height, width = pixels.shape[:2]
        assert 0.6 * figures.COLUMN_WIDTH * 300 < width <= (figures.COLUMN_WIDTH + 0.2) * 300
        assert height > 300, (name, pixels.shape)
        ink = (pixels[..., :3] < 0.9).any(axis=-1).mean()  # share of non-white pixels
        assert 0.02 < ink < 0.9, (name, ink)
        assert (tiny_run / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    aggregate = pd.read_csv(tiny_run / "decay_timing.csv")
    fig = figures.decay_timing(aggregate)
    lines = {line.get_gid(): line for line in fig.axes[0].lines}
    for column in ("subpath_final_test_loss", "main_test_loss_at_branch"):
        rows = aggregate[aggregate.quantity == column].sort_values("branch_epoch")
        np.testing.assert_array_equal(lines[column].get_xdata(), rows["branch_epoch"])
        np.testing.assert_array_equal(lines[column].get_ydata(), rows["mean"])
    assert len(fig.axes[0].collections) == 3  # an interval band per line
    assert "2 seeds" in fig.axes[0].get_title()


FIGURES = ["fig1a_learning_curves", "fig1b_subpath_train_loss", "fig1c_subpath_test_loss",
           "fig1d_decay_timing", "fig2a_landscape_train", "fig2b_landscape_test"]


def test_second_run_has_nothing_to_do(tiny_run: Path) -> None:
    result = snakemake(tiny_run.parent.parent, "-n", "--cores", "1", seeds=SEEDS)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_same_config_gives_same_numbers(tiny_run: Path, tmp_path: Path) -> None:
    """CPU determinism across whole runs (every random choice is seeded from config)."""
    target = f"{tmp_path}/results/tiny/seed-0/metrics.csv"
    result = snakemake(tmp_path, "--cores", "2", target)
    assert result.returncode == 0, result.stderr[-3000:]
    first = pd.read_csv(tiny_run / "seed-0" / "metrics.csv")
    second = pd.read_csv(target)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    # checkpoints too, byte for byte (DVC hashes them: a rerun must not look like a change)
    for state in sorted((tiny_run / "seed-0" / "main").rglob("*.pt")):
        twin = tmp_path / "results" / "tiny" / state.relative_to(tiny_run)
        assert state.read_bytes() == twin.read_bytes(), state


def test_lint_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


# --- resources: every job's request is above its measured peak, and not absurdly above ----------

def test_memory_requests_cover_the_measured_peak(tiny_run: Path) -> None:
    """Each job logs its peak RSS (lrdecay.core.logs); the rule's mem_mb must hold it with room to
    spare but not ask for several times more (small jobs: 400 MB more). A request that forgot the
    interpreter and torch (~600 MB) fails the lower bound; a fixed 8 GB for PCA, or torch's
    800 MB base for a table job that never imports it, fails the upper one."""
    costs = resources.JobCosts(lrconfig.load(TINY), gpu=False)
    peaks = {}
    for log_file in sorted(tiny_run.glob("**/logs/*.log")):
        found = re.findall(r"peak memory (\d+) MB", log_file.read_text())
        rule = re.sub(r"-[\d.]+$", "", log_file.stem)
        if rule.startswith("toy_"):
            continue  # toy rules (toy.smk) keep their own fixed requests
        assert found, f"{log_file} does not log the job's peak memory"
        peaks[str(log_file.relative_to(tiny_run))] = (rule, int(found[-1]))
    assert {rule for rule, _ in peaks.values()} >= {
        "prepare_data", "main_segment", "subpath_group", "gather_training", "pca",
        "landscape_shard", "landscape_gather", "figure1", "figure2", "decay_timing", "claims"}
    for job, (rule, peak) in peaks.items():
        requested = costs.mem_mb(rule)
        assert peak < requested < max(2.5 * peak, peak + 400), \
            f"{job}: peak {peak} MB, mem_mb {requested}"
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
                                                "optimizer": {"main_lr": 1.0e6}},
                               "seed-0/main/segment-0003")
    log_file = Path(run, "seed-0", "logs", "main_segment-0003.log")
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
    jobs_in = (REPO / "workflow" / "envs" / "jobs.in").read_text().splitlines()
    listed = {line.strip().lower() for line in jobs_in if line.strip()[:1].isalpha()}
    imported = set()
    for path in [*(REPO / "lrdecay").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"lrdecay", "snakemake"}
    missing = {PIP_NAMES.get(name, name) for name in third_party} - listed
    assert not missing, f"add to workflow/envs/jobs.in, then run .ci/lock: {sorted(missing)}"


def test_job_scripts_read_only_what_their_rule_declares() -> None:
    """Scripts read params, input, output, log, wildcards and threads, and from the whole config
    only the run settings (`plan.engine_run(snakemake.config)`): any other setting a job read from
    `snakemake.config` would change its numbers without being a param, so neither Snakemake nor
    DVC would rerun it."""
    allowed = {"params", "input", "output", "log", "wildcards", "threads", "rule", "resources"}
    for path in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {"snakemake"} | {target.id for node in ast.walk(tree)
                                   if isinstance(node, ast.Assign)
                                   and isinstance(node.value, ast.Name)
                                   and node.value.id == "snakemake"
                                   for target in node.targets if isinstance(target, ast.Name)}
        reads = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id in aliases]
        run_settings = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "engine_run" for arg in node.args}
        read = {node.attr for node in reads if id(node) not in run_settings}
        assert read <= allowed, f"{path.name} reads snakemake.{sorted(read - allowed)}"


def test_run_settings_rerun_no_job(tiny_run: Path) -> None:
    """Threads, checkpoint interval and cuDNN algorithm search say how to run, not what to
    compute (lrdecay.study.plan.engine_run): with Snakemake's default rerun triggers (params
    included), a run with other values has nothing to do. Were they params, this would retrain
    every path."""
    result = snakemake(tiny_run.parent.parent, "-n", "--cores", "1", seeds=SEEDS,
                       engine="{checkpoint_seconds: 7, threads: 1, cudnn_benchmark: false}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr, jobs_run(result.stdout)
    # a setting that changes numbers still reruns training (the trigger works)
    result = snakemake(tiny_run.parent.parent, "-n", "--cores", "1", seeds=SEEDS,
                       engine="{channels_last: false}")
    assert {"main_segment", "subpath_group"} <= {rule for rule, _ in jobs_run(result.stdout)}


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
    gpu_rules = {"main_segment", "subpath_group", "landscape_shard", "sharpness"}
    assert gpu_rules <= set(partition) and "pca" in partition
    for rule, found in partition.items():
        expected = "gpuq" if device == "cuda" and rule in gpu_rules else "cpuq"
        assert found == {expected}, (rule, found)
