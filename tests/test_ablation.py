"""Cheap ablations: a subpath-only key (another decay lr, longer subpaths, another grouping or
engine for them) retrains the subpaths and what follows them, never the main path, under
Snakemake and DVC; a main-path key retrains the main path. What each stage reads is declared once
(lrdecay.study.plan.Reads) and is its rule's params, its job's config, its hash and its DVC
params."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrdecay.config import validate as lrconfig
from lrdecay.study import plan
from lrdecay.tooling import dvcgen

from .conftest import REPO, TINY, load_tiny

# Each subpath-only key with another valid value for the tiny preset
# (lrdecay.study.plan.SUBPATH_KEYS).
SUBPATH_CHANGES = {
    "optimizer.subpath_lr": 0.02,
    "schedule.subpath_epochs": 2,
    "schedule.subpaths_per_job": 3,
    "schedule.decay": "{shape: linear, epochs: 2}",  # a cooldown over 2 of the 3 epochs
    "engine.batched_subpaths": "vmap",
}
MAIN_CHANGES = {"optimizer.main_lr": 0.05, "optimizer.batch_size": 16,
                "schedule.warmup_epochs": 1}
# What the fixture builds: every training-type stage of the seed but the landscape (slow), which
# reads the subpaths' results as any other later stage.
TARGETS = ("seed-0/decay_timing.csv", "seed-0/pca/coordinates.csv", "seed-0/sharpness.csv")


def snakemake(workdir: Path, *args: str, change: tuple[str, object] | None = None,
              timeout: int = 300) -> str:
    """Snakemake on the tiny preset in `workdir` for TARGETS, with one key changed on the
    command line as a user would (--config 'optimizer={subpath_lr: 0.02}'); its output."""
    run = workdir / "results" / "tiny"
    overrides = [f"output_dir={workdir / 'results'}"]
    if change is not None:
        section, key = change[0].split(".")
        overrides.append(f"{section}={{{key}: {change[1]}}}")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(TINY), "--config", *overrides, *args,
               *(str(run / target) for target in TARGETS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


def scheduled(output: str) -> dict[str, int]:
    """Rule -> number of jobs in a dry run's job stats ({} when nothing is to be done)."""
    table = output.partition("Job stats:")[2].split("\n\n")[0]
    rows = (re.fullmatch(r"(\w+)\s+(\d+)", line.strip()) for line in table.splitlines())
    return {row[1]: int(row[2]) for row in rows if row and row[1] != "total"}


def downstream(rulegraph: str, start: str) -> set[str]:
    """`start` and every rule that (transitively) reads its outputs, in Snakemake's rulegraph."""
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", rulegraph, re.MULTILINE))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", rulegraph, re.MULTILINE)
    found, todo = set(), [next(node for node, name in names.items() if name == start)]
    while todo:
        node = todo.pop()
        found.add(node)
        todo += [after for before, after in edges if before == node and after not in found]
    return {names[node] for node in found}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny study (TARGETS) in a scratch folder, and its rulegraph."""
    workdir = tmp_path_factory.mktemp("ablation")
    snakemake(workdir, "--cores", "2")
    assert scheduled(snakemake(workdir, "-n")) == {}, "the finished run is not up to date"
    return workdir, snakemake(workdir, "--rulegraph", "dot")


@pytest.mark.parametrize(("key", "value"), SUBPATH_CHANGES.items(), ids=list(SUBPATH_CHANGES))
def test_a_subpath_key_retrains_the_subpaths_only(finished: tuple[Path, str], key: str,
                                                  value: object) -> None:
    """After a finished run, `snakemake -n` with a subpath key changed schedules the subpath
    jobs and exactly what follows them: no main-path segment (the 1,000-2,000 epochs of the
    paper's main path). A main-path job that declared the key would be scheduled here."""
    workdir, rulegraph = finished
    jobs = scheduled(snakemake(workdir, "-n", change=(key, value)))
    expected = downstream(rulegraph, "subpath_group") - {"all"}
    assert "main_segment" not in jobs, jobs
    assert set(jobs) == expected, jobs


@pytest.mark.parametrize(("key", "value"), MAIN_CHANGES.items(), ids=list(MAIN_CHANGES))
def test_a_main_path_key_retrains_the_main_path(finished: tuple[Path, str], key: str,
                                                value: object) -> None:
    """A key the main path reads reruns every segment and all that follows."""
    workdir, rulegraph = finished
    jobs = scheduled(snakemake(workdir, "-n", change=(key, value)))
    assert jobs.get("main_segment") == len(lrconfig.Plan(load_tiny(workdir)).segment_ends) + 1
    assert set(jobs) == downstream(rulegraph, "main_segment") - {"all"}, jobs


def _covers(declared: list[str], key: str) -> bool:
    return key in declared or key.partition(".")[0] in declared


def _stage_params(pipeline: dict, rule: str) -> list[list[str]]:
    """The DVC params (keys of every config file) of each stage of `rule`."""
    return [[key for entry in stage.get("params", []) for keys in entry.values() for key in keys]
            for name, stage in pipeline["stages"].items() if name.startswith(f"{rule}-")]


def _check_pipeline(pipeline: dict) -> None:
    main, groups = _stage_params(pipeline, "main_segment"), _stage_params(pipeline, "subpath_group")
    assert main and groups
    # a later-added key at its default is left out of the params (plan.LATER_DEFAULTS)
    listed = [key for key in [*SUBPATH_CHANGES, *MAIN_CHANGES] if key not in plan.LATER_DEFAULTS]
    for declared in main:
        assert not [key for key in SUBPATH_CHANGES if _covers(declared, key)], declared
        assert all(_covers(declared, key) for key in MAIN_CHANGES if key in listed), declared
    for declared in groups:
        assert all(_covers(declared, key) for key in listed), declared


def test_dvc_lists_no_subpath_key_for_the_main_path() -> None:
    """The same under DVC: the pipeline generated from the DAG (lrdecay.tooling.dvcgen; here the
    tiny preset's) lists each stage's declared keys as its params, so `dvc repro` after a subpath
    ablation reruns no main-path stage; the subpath stages list every subpath key, the main
    path's stages their own keys. The committed pipelines too (tests/test_dvc.py checks they
    are current)."""
    _check_pipeline(dvcgen.generate(REPO, ["config/tiny.yaml"]))
    _check_pipeline(yaml.safe_load((REPO / dvcgen.DVC_YAML).read_text()))
    _check_pipeline(dvcgen.generate(REPO, ["config/authors.yaml"]))  # generated when built


def test_the_declarations_cover_every_training_key(tmp_path: Path) -> None:
    """Every key of the training sections is declared by the subpaths (so every training hash
    covers it), none both by the main path and as subpath-only, and a main-path job's config
    holds no subpath key: reading one there fails instead of tying the main path to it."""
    assert set(SUBPATH_CHANGES) == set(plan.SUBPATH_KEYS)
    assert not [key for key in plan.SUBPATH_KEYS if _covers(list(plan.MAIN_PATH.keys), key)]
    schema = lrconfig.load_schema()["properties"]
    for section in ("device", "data", "model", "loss", "optimizer", "schedule", "metrics",
                    "trajectory"):
        keys = schema[section].get("properties") or {"": None}
        for key in keys:
            name = f"{section}.{key}" if key else section
            assert _covers(list(plan.SUBPATHS.keys), name), name
    engine = {f"engine.{key}" for key in lrconfig.NUMERIC_ENGINE_KEYS}
    assert engine <= set(plan.SUBPATHS.keys)
    job = plan.MAIN_PATH.narrow(load_tiny(tmp_path))
    assert "subpath_lr" not in job["optimizer"] and "batched_subpaths" not in job["engine"]
    assert "subpath_epochs" not in job["schedule"] and "toy" not in job
    assert plan.MAIN_PATH.hash(job) == plan.MAIN_PATH.hash(load_tiny(tmp_path))
    changed = load_tiny(tmp_path, optimizer={"subpath_lr": 0.02})
    assert plan.MAIN_PATH.hash(changed) == plan.MAIN_PATH.hash(job)
    assert plan.SUBPATHS.hash(changed) != plan.SUBPATHS.hash(load_tiny(tmp_path))
