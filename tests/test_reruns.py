"""Each job reruns on exactly what it reads, under plain Snakemake.

Code as input: editing a module of lrdecay/ reruns exactly the jobs whose script imports it
(their `code` input, workflow/rules/common.smk's code(): the import closure
lrdecay.tooling.dvcgen.code_files also gives DVC's deps) and what follows them; editing a test file
or the README reruns nothing. Config: changing any leaf key of the schema reruns exactly the jobs of
the stage that reads it first and what follows them. The run is the tiny study's DAG with every
output in place (empty files and folders, no job run) recorded by `snakemake --touch --forceall`,
which stores each job's params and inputs as a real run does: Snakemake's rerun triggers are what is
under test, and they read only mtimes and that record."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

from lrdecay.study import plan
from lrdecay.tooling import dvcgen

from .conftest import REPO, make_config_yaml_tiny, sh, working_tree_copy

# A module -> the rules whose jobs import it (by hand, as tests/test_dvc.py's RERUN_BY_FILE, not
# from the closure under test); an edit reruns these and their downstream jobs.
# Files that rerun nothing are edited together (one dry run).
EDITS: dict[tuple[str, ...], set[str]] = {
    # the vmap code: subpaths only, no main path
    ("lrdecay/training/stacked.py",): {"subpath_group"},
    ("lrdecay/toy/simulate.py",): {"toy_checks", "toy_table"},
    ("lrdecay/analysis/figures.py",): {"figure1", "figure2", "figure_mechanism", "toy_figure3",
                              "toy_figures"},
    # validation only: no job imports it (under DVC: the DAG check); a test file; the README
    ("lrdecay/config/validate.py", "tests/test_cli.py", "README.md"): set(),
}
OLD, NOW = 1_600_000_000, 1_700_000_000  # mtimes: the code's, and every output's


def dry_run(repo: Path, *args: str) -> dict[str, int]:
    """Rule -> jobs `snakemake -n` schedules in `repo` ({} when nothing is to be done)."""
    output = sh(repo, "snakemake", "-n", "--cores", "1", *args, timeout=120)
    table = output.partition("Job stats:")[2].split("\n\n")[0]
    rows = (re.fullmatch(r"(\w+)\s+(\d+)", line.strip()) for line in table.splitlines())
    return {row[1]: int(row[2]) for row in rows if row and row[1] not in ("total", "all")}


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dvcgen.Job]]:
    """A copy of this checkout as the tiny study with every job's outputs in place, newer than
    every file of the checkout and recorded as made by today's rules, and the DAG's jobs."""
    repo = tmp_path_factory.mktemp("code-inputs")
    working_tree_copy(repo)
    make_config_yaml_tiny(repo)
    for path in repo.rglob("*"):
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    jobs, _ = dvcgen._snakemake_jobs(repo, [dvcgen.DEFAULT_CONFIG], {})  # noqa: SLF001
    outputs = [repo / out for job in jobs for out in job.outputs]
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir() if not out.suffix else out.touch()  # directory() outputs: segment-0006
    for out in outputs:
        os.utime(out, (NOW, NOW))
    sh(repo, "snakemake", "--touch", "--forceall", "--cores", "1", timeout=120)  # the record
    assert dry_run(repo) == {}, "the placed outputs are not up to date"
    return repo, jobs


def downstream(jobs: list[dvcgen.Job], rules: set[str]) -> set[str]:
    """`rules` and every rule whose jobs read (transitively) their jobs' outputs."""
    found = set(rules)
    while True:
        made = {out for job in jobs if job.rule in found for out in job.outputs}
        more = {job.rule for job in jobs if made & set(job.inputs)} - found
        if not more:
            return found
        found |= more


@pytest.mark.parametrize("paths", EDITS, ids=[" ".join(paths) for paths in EDITS])
def test_an_edit_reruns_exactly_the_jobs_that_import_it(
        placed: tuple[Path, list[dvcgen.Job]], paths: tuple[str, ...]) -> None:
    """An appended comment (a newer mtime) schedules the jobs of EDITS[paths] and their
    downstream jobs, nothing else; under DVC the same rules' stages list the file as a dep (the
    committed quick-preset pipeline: `dvc status` reports those stages)."""
    repo, jobs = placed
    originals = {path: (repo / path).read_text() for path in paths}
    for path, text in originals.items():
        (repo / path).write_text(text + "\n# an edit\n")
    try:
        scheduled = dry_run(repo)
    finally:
        for path, text in originals.items():
            (repo / path).write_text(text)
            os.utime(repo / path, (OLD, OLD))
    assert set(scheduled) == downstream(jobs, EDITS[paths]), scheduled
    stages = yaml.safe_load((REPO / dvcgen.DVC_YAML).read_text())["stages"]
    under_dvc = {name.split("-")[0] for name, stage in stages.items()
                 if set(paths) & set(stage["deps"])}
    assert under_dvc - {dvcgen.CHECK_STAGE} == EDITS[paths], under_dvc


def test_every_job_declares_its_scripts_import_closure(
        placed: tuple[Path, list[dvcgen.Job]]) -> None:
    """Every job runs a script and names its import closure as its `code` input (dvcgen also
    refuses a rule that does not, so the DVC deps and the Snakemake inputs are one list)."""
    repo, jobs = placed
    for job in jobs:
        assert job.script is not None, job.rule
        closure = dvcgen.code_files(repo, job.script)
        assert f"workflow/scripts/{job.script.name}" in closure
        dvcgen.check_code_input(repo, job, closure)


# -- every leaf key of the schema -----------------------------------------------------------------
# Which rules read a key first (by hand, from what each stage computes, not from the declarations
# under test): a change reruns their jobs and what follows them, nothing upstream or beside. By
# the longest matching prefix. The main path reads every training key but the subpath-only ones.
FIRST_READERS: dict[str, set[str]] = {
    "data": {"prepare_data"},
    "device": {"main_segment"}, "model": {"main_segment"}, "loss": {"main_segment"},
    "metrics": {"main_segment"}, "trajectory": {"main_segment"},
    "optimizer": {"main_segment"}, "schedule": {"main_segment"}, "engine": {"main_segment"},
    **{key: {"subpath_group"} for key in plan.SUBPATH_KEYS},
    "pca": {"pca"},
    "landscape": {"landscape_shard"},
    # the grid follows the surface, and each snapshot's distance from it is a table of its own
    "landscape.surface": {"landscape_shard", "landscape_surface"},
    "sharpness": {"sharpness"},
    "toy": {"toy_checks", "toy_figure3", "toy_figures"},  # each draws from the toy settings
}
# How to run, not what to compute (lrdecay.study.plan.engine_run): no job reruns.
RUN_SETTINGS = {f"engine.{key}" for key in ("checkpoint_seconds", "cudnn_benchmark", "threads")}
# Where the run goes and which seeds: a new folder or new jobs, not a rerun (test_workflow.py).
# main_path_dir: where a sweep point's main path lies (lrdecay.config.sweep; tests/test_sweep.py).
LAYOUT = {"output_dir", "run_name", "seeds", "main_path_dir"}
# Values the generic rule below cannot find (a valid other value, same DAG folder).
VALUES: dict[str, object] = {"engine.threads": 1, "data.name": "cifar10",
                             "model.name": "vgg_small", "schedule.decay.shape": "linear",
                             "schedule.decay.epochs": 1, "optimizer.betas": [0.8, 0.99]}
# Keys whose other values are valid only with another key's (a conv net needs CIFAR-10 images; a
# shaped cooldown needs a length, a length needs a shape): changed together, so their batch
# reruns both keys' readers.
TOGETHER = {"model.name": "data.name", "schedule.decay.shape": "schedule.decay.epochs",
            "schedule.decay.epochs": "schedule.decay.shape"}
# A valid value off the default of each later-added key (plan.LATER_DEFAULTS): at the default a
# key is left out of every job's params by design, so its declarations are read from the DAG
# planned with these values.
LATER_VALUES: dict[str, object] = {"data.label_noise": 0.2, "schedule.warmup_epochs": 1,
                                   "schedule.decay": {"shape": "linear", "epochs": 1},
                                   "optimizer.name": "adamw", "optimizer.betas": [0.8, 0.99],
                                   "optimizer.eps": 1e-6, "model.width": 8,
                                   "landscape.bn_stats": "batch", "landscape.bn_samples": 500}


def first_readers(key: str) -> set[str]:
    if key in RUN_SETTINGS:
        return set()
    prefixes = [p for p in FIRST_READERS if key == p or key.startswith(p + ".")]
    return FIRST_READERS[max(prefixes, key=len)] if prefixes else {"?"}


def _candidates(key: str, value: object, spec: dict) -> list[object]:
    """Other values of a key to try, the schema's enum first."""
    if key in VALUES:
        return [VALUES[key]]
    if "enum" in spec:
        return [v for v in spec["enum"] if v != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, float):
        return [value * 2 if value else 0.5, value / 2, value + 0.1]
    if isinstance(value, str):
        return [value + "2"]
    if isinstance(value, list) and value:
        return [[v + 1 if not isinstance(v, bool) else v for v in value], value[:1], value * 2]
    return []


def _schema_spec(schema: dict, key: str) -> dict:
    node = schema
    for part in key.split("."):
        node = node.get("properties", {}).get(part, {})
    return node


def _nested(key: str, value: object) -> dict:
    """{"a": {"b": value}} for key "a.b", at any depth."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def change_batches(repo: Path) -> list[tuple[set[str], dict, list[str]]]:
    """Every leaf key but the layout ones, grouped by its first readers: (readers, the changes
    (a config mapping) of a batch of keys valid together, their names); a key no value of which
    validates fails the test."""
    from lrdecay.config import validate as lrconfig

    base = yaml.safe_load((repo / "config.yaml").read_text())
    full = lrconfig.validate(copy.deepcopy(base))
    schema = lrconfig.load_schema()
    groups: dict[frozenset[str], list[str]] = {}
    for key in plan.leaf_keys(full):
        if key not in LAYOUT:
            readers = first_readers(key) | first_readers(TOGETHER.get(key, key))
            groups.setdefault(frozenset(readers), []).append(key)
    batches, stuck = [], []
    for readers, keys in groups.items():
        pending = list(keys)
        while pending:
            changes, names = {}, []
            for key in list(pending):
                value = full
                for part in key.split("."):
                    value = value[part]
                for candidate in _candidates(key, value, _schema_spec(schema, key)):
                    trial = copy.deepcopy(changes)
                    lrconfig._deep_update(trial, _nested(key, candidate))  # noqa: SLF001
                    if key in TOGETHER:
                        lrconfig._deep_update(  # noqa: SLF001
                            trial, _nested(TOGETHER[key], VALUES[TOGETHER[key]]))
                    merged = copy.deepcopy(base)
                    lrconfig._deep_update(merged, trial)  # noqa: SLF001
                    try:
                        lrconfig.validate(merged)
                    except lrconfig.ConfigError:
                        continue
                    changes, names = trial, [*names, key]
                    pending.remove(key)
                    break
            if not names:
                stuck += pending
                break
            batches.append((set(readers), changes, names))
    assert not stuck, f"no other valid value found for {stuck}: add one to VALUES"
    return batches


def _declared(jobs: list[dvcgen.Job], config: dict) -> dict[str, set[str]]:
    """Config key or section -> the rules whose jobs' params declare it (DVC's params too)."""
    declared: dict[str, set[str]] = {}
    for job in jobs:
        for section in dvcgen.param_sections(job, config):
            declared.setdefault(section, set()).add(job.rule)
    return declared


def test_every_leaf_key_is_read_or_a_run_setting(placed: tuple[Path, list[dvcgen.Job]]) -> None:
    """The cheap check: every leaf key of the schema is declared by the params of its first
    readers, and by no job outside them and what follows them (a subpath key handed to the main
    path fails here); a run setting or layout key by none."""
    from lrdecay.config import validate as lrconfig

    repo, jobs = placed
    full = lrconfig.validate(yaml.safe_load((repo / "config.yaml").read_text()))
    declared = _declared(jobs, full)
    assert set(LATER_VALUES) == set(plan.LATER_DEFAULTS) - LAYOUT, \
        "give each later key a value here"
    later: dict = {}
    for key, value in LATER_VALUES.items():
        lrconfig._deep_update(later, _nested(key, value))  # noqa: SLF001
    (repo / "later.yaml").write_text(yaml.safe_dump(later))
    later_jobs, later_config = dvcgen._snakemake_jobs(  # noqa: SLF001
        repo, [dvcgen.DEFAULT_CONFIG, "later.yaml"], {})
    declared_later = _declared(later_jobs, lrconfig.validate(later_config))
    wrong = {}
    for key in plan.leaf_keys(full):
        is_later = any(key == k or key.startswith(k + ".") for k in LATER_VALUES)
        readers = {rule for name, rules in (declared_later if is_later else declared).items()
                   if key == name or key.startswith(name + ".") for rule in rules}
        expected = first_readers(key)
        if key in LAYOUT:
            continue
        if not expected <= readers or not readers <= downstream(jobs, expected):
            wrong[key] = (sorted(expected), sorted(readers))
    assert not wrong, f"key: (first readers, rules declaring it): {wrong}"


def test_every_leaf_key_reruns_its_readers_and_what_follows(
        placed: tuple[Path, list[dvcgen.Job]]) -> None:
    """For every leaf key of the schema, changed to another valid value (with the other keys
    of the same first readers, as a config file on top, one `snakemake -n` per batch), the jobs
    scheduled are those readers' and their downstream jobs: exactly, and for run settings none."""
    repo, jobs = placed
    wrong = {}
    for readers, changes, names in change_batches(repo):
        (repo / "change.yaml").write_text(yaml.safe_dump(changes))
        scheduled = set(dry_run(repo, "--configfile", "change.yaml"))
        expected = downstream(jobs, readers)
        if scheduled != expected:
            wrong[", ".join(names)] = {"missing": sorted(expected - scheduled),
                                       "extra": sorted(scheduled - expected)}
    assert not wrong, wrong


def dvc_changed(repo: Path) -> set[str]:
    """Rules whose stages `dvc status` reports changed in `repo` (the DAG check stage aside)."""
    import json

    report = json.loads(sh(repo, "dvc", "status", "--json", "dvc.yaml", timeout=120) or "{}")
    return {name.split("-")[0] for name in report} - {dvcgen.CHECK_STAGE}


def test_every_leaf_key_changes_exactly_its_readers_stages_under_dvc(
        placed: tuple[Path, list[dvcgen.Job]]) -> None:
    """The same batches under a real `dvc status`: the tiny study's dvc.yaml, its lock recorded
    cheaply over the placed outputs (`dvc commit`, no stage run), then each batch's values
    written into the params file. The stages DVC reports changed are those of stages that
    declare a key: they must hold the key's first readers and lie within those and what
    follows them (DVC reports no downstream stage whose inputs have not changed yet); a run
    setting changes none. A later-added key (plan.LATER_DEFAULTS) is in no params at its
    default: off it, dvc.yaml is regenerated (as the DAG check stage asks) before `dvc status`.
    A subpath key in the main path's DVC params fails here."""
    repo, jobs = placed
    config_yaml = repo / "config.yaml"
    original = config_yaml.read_text()
    # the tiny study's pipeline (config.yaml is it)
    sh(repo, "python", "-m", "lrdecay.tooling.dvcgen")
    pipeline = (repo / dvcgen.DVC_YAML).read_text()
    if not (repo / ".git").exists():
        sh(repo, "git", "init", "-q")
    check = yaml.safe_load((repo / dvcgen.DVC_YAML).read_text())["stages"][dvcgen.CHECK_STAGE]
    for out in check["outs"]:  # the DAG check's stamp; every job output is placed already
        name = out if isinstance(out, str) else next(iter(out))
        (repo / name).touch()
    sh(repo, "dvc", "commit", "--force", "dvc.yaml", timeout=300)
    assert dvc_changed(repo) == set(), "the recorded lock is not up to date"
    wrong = {}
    try:
        for readers, changes, names in change_batches(repo):
            changed = yaml.safe_load(original)
            from lrdecay.config import validate as lrconfig

            lrconfig._deep_update(changed, changes)  # noqa: SLF001
            config_yaml.write_text(yaml.safe_dump(changed, sort_keys=False))
            later = [n for n in names if any(n == k or n.startswith(k + ".")
                                             for k in plan.LATER_DEFAULTS)]
            if later:  # at their default in no params: the DAG check names the new ones
                sh(repo, "python", "-m", "lrdecay.tooling.dvcgen")
            reported = dvc_changed(repo)
            if later:
                (repo / dvcgen.DVC_YAML).write_text(pipeline)
            if not readers <= reported or not reported <= downstream(jobs, readers):
                wrong[", ".join(names)] = {"expected": sorted(readers),
                                           "reported": sorted(reported)}
    finally:
        config_yaml.write_text(original)
        (repo / dvcgen.DVC_YAML).write_text(pipeline)
    assert not wrong, wrong
