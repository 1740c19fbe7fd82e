"""Generate dvc.yaml from the Snakemake DAG, so DVC versions the study without a second DAG.

Snakemake is the one DAG: every Snakemake job belongs to exactly one DVC stage, whose deps are its
jobs' input files plus the code they run (the script and the lrdecay modules that script imports,
followed transitively), whose params are the config sections the rule passes as ``params:``, and
whose outs are exactly the jobs' outputs. A stage holds one job, or all the sibling jobs of one
rule within one seed (the toy gammas, a seed's subpath groups, a seed's landscape shards; see
``stage_groups``): siblings never feed each other and share their params and code, so any change
that reruns one reruns them all anyway, and holding them in one stage lets its one ``snakemake
--cores all`` call run them side by side (DVC runs stages one after another) and pay Snakemake's
start-up once. No two stages own the same output, a failed or changed stage reruns only its own
jobs, a change to figure code reruns only the figure stages, and adding a seed reruns no stage of
the others (the seed wildcard keeps stages apart).

Each stage's command runs Snakemake for that stage's jobs only. DVC deletes a stage's outputs
before it runs it, so its jobs always run; what must not happen is Snakemake rerunning an *upstream*
job because ``dvc pull``/``dvc checkout`` left file mtimes in an arbitrary order and no
``.snakemake/`` metadata. Snakemake 9 checks input mtimes whatever ``--rerun-triggers`` says, so the
command pins it down structurally:

* ``--allowed-rules <rule>``: jobs of other rules are not in the DAG, their outputs are plain
  inputs, whatever their mtimes;
* ``--consider-ancient <rule>=<inputs>`` for a rule that feeds itself (the main-path segment chain):
  upstream jobs of the same rule never look outdated by mtime (the generator checks that Snakemake
  really flags every such input ancient: it does not for plain list items);
* ``--consider-ancient <rule>=code`` for every other rule: its code input (the script and the
  modules it imports) never makes a finished job look outdated; DVC has hashed the code already,
  and rerunning a stage's command after a fix runs only the jobs that did not finish;
* ``--rerun-triggers mtime``: no params/code/input metadata checks; DVC has already decided;
* ``--keep-going`` where a stage holds several jobs: one failing job does not stop its siblings.
  DVC then records nothing for the stage, and the next ``dvc repro`` would rerun every job of
  it; to keep the finished ones, rerun the stage's command (Snakemake skips them), then
  ``dvc commit <stage>``.

What the code deps mean for the package: a stage reruns after an edit to any module its script
imports, directly or not, and to nothing else. So a module that a job does not need is kept out of
its imports, and the package's splits keep the costly stages' closures small:

* lrdecay.core.basics (the config's error type and hash) is apart from lrdecay.config.validate, and
  job code imports lrdecay.study.plan rather than lrdecay.config.validate: editing the validation,
  the model and dataset registries or the resource requests retrains nothing, nor reruns the toy
  simulations;
* lrdecay.study.pca_budget is apart from lrdecay.config.resources: the PCA job does not take in the
  registries;
* lrdecay.training.stacked (the vmap code) is imported by lrdecay.training.subpaths only, and
  lrdecay.training.subpaths is apart from lrdecay.training.train: editing either reruns the subpath
  groups and what follows them, never the main-path segments or the landscape shards (which import
  lrdecay.training.engine);
* the toy figure jobs' entry points live in lrdecay.toy.figures, apart from lrdecay.toy.pipeline:
  a change to figure code never reruns the simulations.

Usage: ``python -m lrdecay.tooling.dvcgen [--configfile FILE ...] [--check]`` (writes or checks the
pipeline; rerun it after changing rules or the config's schedule, then commit it).

Presets side by side: config.yaml alone (the quick preset) is ``dvc.yaml`` at the top; a run with
other config files (``--configfile config/authors.yaml``) gets ``pipelines/<run_name>/dvc.yaml``,
whose stages work from the repository root (``wdir: ../..``). Generating one never touches
another: ``dvc repro`` builds the quick preset, ``dvc repro pipelines/authors/dvc.yaml`` the
authors' one. Only ``dvc.yaml`` is committed; another preset's pipeline is generated (and then
committed) when it is built, because plain ``dvc status`` lists the stages of every dvc.yaml in
the repository, and a never-built preset's are thousands of lines (DVC cannot leave out a
dvc.yaml that it can still run: a .dvcignore'd or git-ignored one is refused as a target too).

A config or rule change that alters the DAG (e.g. more landscape shards) would leave the stages
stale. The first stage of every pipeline, ``check_dag``, depends on the config files, the rules and
the code that validates and plans the config, and reruns this generator with ``--check``: it fails,
naming the command to run, before any Snakemake job starts. Every stage without an upstream stage
depends on its stamp file, whose content never changes, so a passing check reruns nothing else.

The run's headline numbers (``headline.json``, lrdecay.analysis.summary.headline) are DVC metrics:
``dvc metrics show`` prints them as one row a terminal holds, ``dvc metrics diff`` compares
commits; the full record (``summary.json``) is an ordinary output. ``dvc plots show`` draws each
seed's per-epoch learning curves (CURVE_COLUMNS) and the tables of TABLE_PLOTS, with axis titles,
and the figures.

Day to day (with .venv/bin on PATH, since stage commands call ``snakemake``):

* build and record: ``dvc repro``, then ``git add dvc.lock && git commit`` and ``dvc push``
  (``snakemake --cores N`` is faster on many cores; then ``dvc commit -f`` records its results);
* elsewhere: ``git clone``/``git pull``, ``dvc pull``; ``dvc repro`` then reruns nothing. Before
  running plain ``snakemake`` there, run ``snakemake --touch --cores 1`` once: pulled files carry
  checkout-time mtimes, which Snakemake would otherwise take for changes;
* the remote: a folder ``../lrdecay-dvc-remote`` beside the checkout (.dvc/config). Switch with
  ``dvc remote add -d store s3://bucket/lrdecay`` or ``ssh://host/path`` (committed), or keep the
  name and change only your copy: ``dvc remote modify --local local url /data/lrdecay-remote``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import functools
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lrdecay.config.sweep import SWEEP_KEY, expand
from lrdecay.config.validate import ConfigError, check_files, read_yaml
from lrdecay.core.io import write_text
from lrdecay.study.layout import METRICS
from lrdecay.study.plan import READS_PARAM, Reads

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "config.yaml"
DVC_YAML = "dvc.yaml"
PIPELINES = Path("pipelines")  # pipelines/<run_name>/dvc.yaml for every config but the default
CHECK_STAGE = "check_dag"
DAG_STAMP = ".dvc-dag-checked"  # in the run folder; written by the check stage
STAMP_TEXT = "dvc pipeline matches the Snakemake DAG (python -m lrdecay.tooling.dvcgen --check)\n"
# Rule outputs that are DVC metrics (JSON): `dvc metrics show` / `dvc metrics diff`. Only the
# headline (lrdecay.analysis.summary.headline): DVC prints one column per number, and the full
# record (summary.json, about 190 numbers) made that row 10,000 characters wide.
METRIC_FILES = ("headline.json",)
HEADER = """\
# Generated by `python -m lrdecay.tooling.dvcgen` from the Snakemake DAG: do not edit by hand.
# One stage per Snakemake job, or per rule and seed for sibling jobs (run side by side); the first
# stage (check_dag) stops `dvc repro` when the config or the rules changed the DAG, and says what
# to run.
# Build: dvc repro | share: dvc push | elsewhere: dvc pull (see lrdecay/tooling/dvcgen.py for why
# the stage commands look the way they do).
"""

# Rule params that are computed from config rather than copied from it: param name -> sections.
# A training-type job's seed comes from its {seed} wildcard, so it is in the stage's paths (and a
# new seed is a new stage): not a DVC param.
# A sweep's comparison names each point and its values: they come from the sweep key.
DERIVED_PARAMS: dict[str, tuple[str, ...]] = {"n_shards": ("landscape",), "seed": (),
                                              "points": (SWEEP_KEY,)}

# The input that names a job's code (workflow/rules/common.smk's code(): its script's closure,
# code_files), so that an edit in lrdecay/ reruns under plain Snakemake what it reruns here.
CODE_INPUT = "code"

# lrdecay.core.io writes a checksum record `<file>.json` beside every checkpoint and array it saves
# and verifies it on reading, so a pulled file without its record is unusable. The rules declare
# these records as outputs (so DVC versions them); the generator refuses a rule that does not.
SIDECAR_SUFFIXES = (".pt", ".npy")

# Tables that DVC can plot (`dvc plots show`): file pattern within the run folder -> plot spec
# (each seed's tables: the run's decay_timing.csv is tidy, a row per quantity). Every plot names
# its axes: DVC titles a y axis of several columns `y`.
TABLE_PLOTS: dict[str, dict[str, Any]] = {
    "seed-*/decay_timing.csv": {
        "x": "branch_epoch",
        "y": ["subpath_final_test_loss", "main_test_loss_at_total_epoch"],
        "title": "Decay timing: subpath final test loss vs the main path at the same epoch",
        "x_label": "decay epoch (branch point of the subpath)",
        "y_label": "test loss at epoch (decay epoch + subpath epochs)",
    },
    # a sweep's comparison (lrdecay.analysis.comparison), one row per point and decay epoch
    "sweep.csv": {
        "x": "branch_epoch",
        "y": "final_test_loss_mean",
        "title": "Sweep: each point's subpath final test loss (mean over seeds) by decay epoch",
        "x_label": "decay epoch (branch point of the subpath)",
        "y_label": "final test loss, mean over seeds",
    },
    "seed-*/pca/explained_variance.csv": {
        "x": "component",
        "y": "explained_variance_ratio",
        "title": "Explained variance ratio of the trajectory PCA",
        "x_label": "principal component",
        "y_label": "explained variance ratio",
    },
}

# Per-epoch learning curves: each seed's metrics.csv (every path: the main path and each
# subpath, by `path` and `branch_epoch`), one plot per column. DVC's own templates draw a file's
# rows as one line, which zigzags between the paths; the template CURVES_TEMPLATE (in DVC's
# template folder, .dvc/plots/) draws a line per path, coloured main path / subpath.
CURVES_TABLE = f"seed-*/{METRICS}"
CURVES_TEMPLATE = "learning_curves"
CURVE_COLUMNS = {"test_loss": "test loss", "train_loss": "train loss"}


@dataclass(frozen=True)
class Job:
    """What dvc.yaml needs from one Snakemake job, detached from Snakemake's objects."""

    rule: str
    wildcards: tuple[str, ...]  # values, in the order of wildcard_names
    wildcard_names: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[str, Any]
    script: Path | None
    snakefile: Path
    input_names: tuple[str, ...]
    ancient_inputs: tuple[str, ...]
    code_inputs: tuple[str, ...] = ()  # its `code` input (workflow/rules/common.smk's code())

    @property
    def stage(self) -> str:
        """DVC stage name: the rule name, plus the wildcard values for per-wildcard jobs."""
        return "-".join([self.rule, *self.wildcards])


# The Snakemake versions the private DAG access below (`_snakemake_dag`, `_as_job`) is tested
# with; tests/test_dvc.py::test_snakemake_dag_access checks it on every run and fails loudly
# if a release changes what it relies on.
SNAKEMAKE_TESTED = "9.x (9.27.1)"


def _snakemake_jobs(
    repo: Path, configfiles: list[str], consider_ancient: dict[str, set[str]]
) -> tuple[list[Job], dict]:
    """Every job of the full DAG of `repo`'s Snakefile (as if every output were missing), by stage
    name (a fixed order; stage_groups puts the stages in DAG order), and the config Snakemake
    merged from `configfiles`."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        OutputSettings,
        ResourceSettings,
        WorkflowSettings,
    )

    with contextlib.chdir(repo), contextlib.redirect_stdout(io.StringIO()):
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[repo / f for f in configfiles]),
                workflow_settings=WorkflowSettings(consider_ancient=consider_ancient),
                snakefile=repo / "Snakefile",
                workdir=repo,
            )
            dag, config = _snakemake_dag(workflow_api)
            check_no_rule_bound_inputs(dag.jobs)
            jobs = [_as_job(job) for job in dag.jobs if not job.rule.norun]  # not `all`
    return sorted(jobs, key=lambda job: job.stage), config  # stage_groups orders the stages


def check_no_rule_bound_inputs(jobs: Iterable[Any]) -> None:
    """Refuse an input given as another rule's `rules.<rule>.output...` item. Snakemake follows
    the rule such an item names past `--allowed-rules`, so a stage's command would rerun that
    upstream job whenever ``dvc checkout`` left its inputs newer than its outputs (which files get
    the later mtimes is arbitrary), although DVC had found the upstream stage unchanged."""
    bound = sorted({(job.rule.name, str(item), getattr(producer, "name", str(producer)))
                    for job in jobs if not job.rule.norun
                    for item, producer in job.rule.dependencies.items()})
    bound = [(rule, item, producer) for rule, item, producer in bound if producer != rule]
    if bound:
        listed = "; ".join(f"rule {rule} input {item} (rules.{producer}.output)"
                           for rule, item, producer in bound)
        raise ValueError(f"{listed}: an input named through another rule escapes a DVC stage's "
                         "--allowed-rules; wrap it in upstream(...) (workflow/rules/common.smk)")


def _snakemake_dag(workflow_api: Any) -> tuple[Any, dict]:
    """Snakemake's own DAG object with every job (as --forceall builds it), and the config.

    Private Snakemake API, on purpose and only here: the public API (snakemake.api's
    DAGApi.printdag, printd3dag, summary, export_to_cwl; the command line's --dag, --d3dag,
    --detailed-summary, --dry-run) prints the DAG but hands out no jobs, and no printed form
    carries what a stage needs: each job's params, script and named, ancient-flagged inputs
    (--detailed-summary gives files and rule names only, --d3dag rule names and edges). Tested
    with Snakemake SNAKEMAKE_TESTED.
    """
    from snakemake.settings.types import DAGSettings

    workflow_api.dag(DAGSettings(forceall=True))  # public: parses the Snakefile, sets forceall
    workflow = workflow_api._workflow  # noqa: SLF001
    workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)  # noqa: SLF001
    workflow._build_dag()  # noqa: SLF001
    return workflow.dag, dict(workflow.config)


def _as_job(job: Any) -> Job:
    """What dvc.yaml needs from one of Snakemake's job objects (from `_snakemake_dag`)."""
    from snakemake.io import is_flagged

    rule = job.rule
    script = (Path(rule.snakefile).parent / rule.script).resolve() if rule.script else None
    return Job(
        rule=rule.name,
        wildcards=tuple(str(v) for v in job.wildcards),
        wildcard_names=tuple(job.wildcards.keys()),
        inputs=tuple(str(f) for f in job.input),
        outputs=tuple(str(f) for f in job.output),
        params=dict(job.params.items()),
        script=script,
        snakefile=Path(rule.snakefile).resolve(),
        input_names=tuple(job.input.keys()),
        ancient_inputs=tuple(str(f) for f in job.input if is_flagged(f, "ancient")),
        code_inputs=tuple(str(f) for f in job.input.get(CODE_INPUT, [])),
    )


def _module_file(repo: Path, module: str) -> Path | None:
    """The file of an lrdecay module inside `repo` (None for modules outside the package)."""
    if module != "lrdecay" and not module.startswith("lrdecay."):
        return None
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, package: str) -> tuple[str, ...]:
    """Absolute names of the modules `path` (in `package`) imports, with `from pkg import sub`.
    Parsed once per file version: the Snakefile asks for every rule's closure at each start."""
    stat = path.stat()
    return _parsed_imports(path, package, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parsed_imports(path: Path, package: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    return tuple(_walk_imports(path, package))


def _walk_imports(path: Path, package: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def code_files(repo: Path, entry: Path) -> list[str]:
    """`entry` and every lrdecay module it imports, transitively (with the packages' __init__)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = ".".join(path.relative_to(repo).parent.parts)
        for module in _imported_modules(path, package):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                found = _module_file(repo, ".".join(parts[:depth]))
                if found is not None and found not in seen:
                    todo.append(found)
    # An empty module (a package's __init__.py) holds no code, and DVC warns about empty deps.
    return sorted(str(p.relative_to(repo)) for p in seen if p.stat().st_size > 0)


def _job_code(repo: Path, job: Job, known: dict[Path, list[str]]) -> list[str]:
    """Code a job runs: its script, else the rule file that holds its run/shell block. `known`
    keeps each entry's closure, so the many jobs of one rule parse their imports once."""
    entry = job.script if job.script is not None else job.snakefile
    if entry not in known:
        known[entry] = code_files(repo, entry)
    return known[entry]


def check_code_input(repo: Path, job: Job, code: list[str]) -> None:
    """A job with a script declares its code (the script's import closure, `code`) as its
    CODE_INPUT, so plain Snakemake reruns it after an edit in lrdecay/ as DVC does."""
    if job.script is None:
        return
    repo = repo.resolve()  # the inputs are relative to the workdir, the repository
    given = {str((repo / f).resolve().relative_to(repo)) for f in job.code_inputs}
    if given != set(code):
        raise ValueError(
            f"rule {job.rule}: its `{CODE_INPUT}` input is not its script's import closure "
            f"(missing {sorted(set(code) - given)}, extra {sorted(given - set(code))}); give "
            f"it {CODE_INPUT}=code(\"{job.script.name}\") (workflow/rules/common.smk)"
        )


def _find_key(tree: Any, name: str, value: Any) -> bool:
    if isinstance(tree, dict):
        return any(
            (key == name and sub == value) or _find_key(sub, name, value)
            for key, sub in tree.items()
        )
    return False


def param_sections(job: Job, config: dict) -> list[str]:
    """Config keys behind the job's Snakemake params (its params rerun trigger): a stage's
    declaration (the `reads` param, lrdecay.study.plan.Reads) names its keys; other params are
    matched to the sections they were copied from."""
    sections: set[str] = set()
    for name, value in job.params.items():
        if name == READS_PARAM:
            sections.update(value)  # declared, not inferred
        elif name in config and config[name] == value:
            sections.add(name)
        elif (name in config and isinstance(config[name], dict)
              and Reads((name,)).values(config)[name] == value):
            sections.add(name)  # the whole section, less its later-added keys at their default
        elif (name in config and isinstance(value, dict) and isinstance(config[name], dict)
              and value and all(config[name].get(k, object()) == v for k, v in value.items())):
            sections.update(f"{name}.{key}" for key in value)  # some keys of a section
        elif isinstance(value, dict) and value and all(
            key in config and config[key] == sub for key, sub in value.items()
        ):
            sections.update(value)
        elif name in DERIVED_PARAMS:
            sections.update(DERIVED_PARAMS[name])
        else:
            found = {key for key, sub in config.items() if _find_key(sub, name, value)}
            if not found:
                raise ValueError(
                    f"rule {job.rule}: param {name!r} is neither a config section nor found in "
                    "one; add it to lrdecay.tooling.dvcgen.DERIVED_PARAMS with the sections it "
                    "comes from"
                )
            sections.update(found)
    return sorted(sections)


def _self_chained(jobs: list[Job]) -> set[str]:
    """Rules with a job whose input is the output of another job of the same rule."""
    producer = {out: job.rule for job in jobs for out in job.outputs}
    return {job.rule for job in jobs if any(producer.get(f) == job.rule for f in job.inputs)}


# Wildcards whose values keep jobs in separate stages even when they are siblings: a seed's
# stages must not change when seeds are added (tests/test_workflow.py checks it).
KEEP_APART = ("seed",)


def stage_groups(jobs: list[Job]) -> dict[str, list[Job]]:
    """Stage name -> its jobs, stages in DAG order (producers first, ties by name). The jobs of a
    rule that feeds itself (the main-path chain) get a stage each, named rule-wildcards; the other
    rules' jobs share one stage per value of the KEEP_APART wildcards, named rule-those values
    (`subpath_group-0`, `toy_checks`)."""
    chained = _self_chained(jobs)
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.rule in chained:
            name = job.stage
        else:
            kept = [value for key, value in zip(job.wildcard_names, job.wildcards, strict=True)
                    if key in KEEP_APART]
            name = "-".join([job.rule, *kept])
        groups.setdefault(name, []).append(job)
    owner = {out: name for name, group in groups.items() for job in group for out in job.outputs}
    ordered: dict[str, list[Job]] = {}
    pending = sorted(groups)
    while pending:
        ready = [name for name in pending
                 if all(owner.get(f) in (None, name, *ordered)
                        for job in groups[name] for f in job.inputs)]
        ordered.update((name, groups[name]) for name in ready)
        pending = [name for name in pending if name not in ready]
    return ordered


def command(jobs: list[Job], configfiles: list[str], ancient: Iterable[str]) -> str:
    """The shell command of the DVC stage holding `jobs` (one rule's; see the module docstring
    for why it looks like this)."""
    rule = jobs[0].rule
    parts = ["snakemake", *(job.outputs[0] for job in jobs), "--cores all",
             f"--allowed-rules {rule}", "--rerun-triggers mtime"]
    if len(jobs) > 1:
        parts.append("--keep-going")
    ancient = sorted(ancient)
    if ancient:
        parts.append(f"--consider-ancient {rule}={','.join(ancient)}")
    extra = [f for f in configfiles if f != DEFAULT_CONFIG]
    if extra:
        parts.append("--configfile " + " ".join(extra))
    return " ".join(parts)


def _check_records(job: Job) -> None:
    """Every checkpoint or array the job writes comes with its declared checksum record."""
    missing = [f"{out}.json" for out in job.outputs
               if out.endswith(SIDECAR_SUFFIXES) and f"{out}.json" not in job.outputs]
    if missing:
        raise ValueError(
            f"rule {job.rule}: lrdecay.core.io writes {missing} beside its outputs and checks them "
            f"on "
            "reading; declare them as outputs of the rule, so DVC versions them too"
        )


def _is_metric(path: str) -> bool:
    return Path(path).name in METRIC_FILES


def run_name(repo: Path, configfiles: list[str]) -> str:
    """The run name the merged config files give (the last file that sets it wins)."""
    name = ""
    for file in configfiles:
        name = read_yaml(repo / file).get("run_name", name)
    return name


def pipeline_path(configfiles: list[str], run_name: str) -> Path:
    """Where the pipeline of these config files lives, relative to the repository root."""
    if [f for f in configfiles if f != DEFAULT_CONFIG]:
        return PIPELINES / run_name / DVC_YAML
    return Path(DVC_YAML)


def _check_stage(repo: Path, configfiles: list[str], stamp: str) -> dict:
    """The first stage: fail before any job when the pipeline no longer matches the DAG. It
    depends on what shapes the DAG: the config files, the rules and the code that validates and
    plans the config (lrdecay.config.validate and its imports), and this generator."""
    extra = [f for f in configfiles if f != DEFAULT_CONFIG]
    code = {*code_files(repo, repo / "lrdecay" / "config" / "validate.py"),
            *code_files(repo, repo / "lrdecay" / "tooling" / "dvcgen.py")}
    return {
        "desc": "Check that this pipeline matches the Snakemake DAG of the config (else: the "
        "command to regenerate it)",
        "cmd": " ".join(["python -m lrdecay.tooling.dvcgen --check",
                         *(["--configfile", *extra] if extra else []), "--stamp", stamp]),
        "deps": [*configfiles, "Snakefile", "workflow/rules", *sorted(code)],
        "outs": [stamp],
    }


def _has_key(tree: Any, path: list[str]) -> bool:
    """Whether a config file sets the (dotted) key."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _config_trees(repo: Path, configfiles: list[str]) -> dict[str, Any]:
    """Each config file as written (not merged), read once for every stage's params."""
    return {name: read_yaml(repo / name) for name in configfiles}


def _params_entry(trees: dict[str, Any], sections: list[str]) -> list[dict]:
    """DVC params: each section from every config file that sets it (Snakemake merges them)."""
    entries = []
    for name, tree in trees.items():
        present = [s for s in sections if _has_key(tree, s.split("."))]
        if present:
            entries.append({name: present})
    return entries


def _pinned_jobs(repo: Path, configfiles: list[str]) -> tuple[list[Job], dict, dict]:
    """The DAG's jobs built with every input of a self-chained rule flagged ancient, the config,
    and those inputs per rule (what each stage command passes as --consider-ancient)."""
    jobs, _ = _snakemake_jobs(repo, configfiles, {})
    chained = _self_chained(jobs)
    ancient = {j.rule: set(j.input_names) if j.rule in chained
               else {CODE_INPUT} & set(j.input_names) for j in jobs}
    ancient = {rule: names for rule, names in ancient.items() if names}
    jobs, config = _snakemake_jobs(repo, configfiles, ancient)
    for job in jobs:
        if job.rule in chained and set(job.ancient_inputs) != set(job.inputs):
            raise ValueError(
                f"rule {job.rule} feeds itself, so every input must be named and given as a "
                "string or function (Snakemake does not mark plain list items ancient): "
                f"{sorted(set(job.inputs) - set(job.ancient_inputs))}"
            )
        _check_records(job)
    return jobs, config, ancient


def _describe(jobs: list[Job]) -> str:
    """`desc` of a stage: the rule and each job's wildcards."""
    values = [", ".join(f"{key} {value}" for key, value in zip(job.wildcard_names, job.wildcards,
                                                               strict=True))
              for job in jobs if job.wildcards]
    if len(jobs) == 1:
        return f"Snakemake job {jobs[0].rule}" + (f" ({values[0]})" if values else "")
    return f"{len(jobs)} Snakemake jobs {jobs[0].rule}, side by side ({'; '.join(values)})"


def _job_stage(repo: Path, jobs: list[Job], configfiles: list[str], config: dict,
               ancient: Iterable[str], stamp: str | None, trees: dict[str, Any],
               known_code: dict[Path, list[str]], swept: bool = False) -> dict[str, Any]:
    """The stage of one rule's `jobs`: its command, deps (inputs, code; `stamp` when no stage is
    upstream), the config sections of its params, outs and metrics."""
    code = _job_code(repo, jobs[0], known_code)
    for job in jobs:
        check_code_input(repo, job, code)
    # the code inputs are listed once, as the stage's code
    inputs = {f for job in jobs for f in job.inputs if f not in job.code_inputs}
    outputs = [out for job in jobs for out in job.outputs]
    stage: dict[str, Any] = {
        "desc": _describe(jobs),
        "cmd": command(jobs, configfiles, ancient),
        "deps": ([stamp] if stamp else []) + sorted(inputs) + code,
    }
    sections = sorted({s for job in jobs for s in param_sections(job, config)})
    if swept:  # a sweep point's or shared main path's job: its values come from the sweep too
        sections.append(SWEEP_KEY)
    params = _params_entry(trees, sections)
    if params:
        stage["params"] = params
    outs = [out for out in outputs if not _is_metric(out)]
    if outs:
        stage["outs"] = outs
    if len(outs) < len(outputs):
        stage["metrics"] = [out for out in outputs if _is_metric(out)]
    return stage


def _owners(stages: dict[str, dict]) -> dict[str, str]:
    """Output -> the stage that owns it; no output, or folder around one, has two owners."""
    owners: dict[str, str] = {}
    for name, stage in stages.items():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            clash = [o for o in owners if o == out or out.startswith(o + "/")
                     or o.startswith(out + "/")]
            if clash:
                raise ValueError(f"{name} and {owners[clash[0]]} both own {out}")
            owners[out] = name
    return owners


def _plots(run_dir: Path, owners: dict[str, str], prefix: str = "",
           study_dirs: tuple[Path, ...] = ()) -> list[dict]:
    """`dvc plots show`: each seed's learning curves, the tables of TABLE_PLOTS the pipeline
    makes, then every PNG. `study_dirs` are the folders that hold one study's tables: the run
    folder, or a sweep's point folders (each titled by its point). `prefix` leads every file
    path (plot paths are relative to the dvc.yaml that lists them; so are plot ids, which are
    paths in the run folder)."""
    tables = sorted(owners)
    plots: list[dict] = []
    for study in study_dirs or (run_dir,):
        point = "" if study == run_dir else f"{study.name}, "
        plots += [
            {f"{prefix}{Path(out).parent}/learning_curves/{column}": {
                "template": CURVES_TEMPLATE, "x": "epoch", "y": {prefix + out: column},
                "title": f"Learning curves, {point}{Path(out).parent.name}: {label} per epoch, "
                "the main path and each subpath",
                "x_label": "epoch (from the start of the main path)",
                "y_label": f"{label} (log scale)"}}
            for out in tables if fnmatch.fnmatch(out, str(study / CURVES_TABLE))
            for column, label in CURVE_COLUMNS.items()]
    patterns = {name: [run_dir / name, *(study / name for study in study_dirs)]
                for name in TABLE_PLOTS}
    plots += [{prefix + out: _titled(spec, Path(out), run_dir)}
              for name, spec in TABLE_PLOTS.items()
              for out in tables if any(fnmatch.fnmatch(out, str(pattern))
                                       for pattern in patterns[name])]
    return plots + [{prefix + out: None} for out in tables if out.endswith(".png")]


def _titled(spec: dict[str, Any], out: Path, run_dir: Path) -> dict[str, Any]:
    """A table's plot spec; a sweep point's title leads with the point's folder name."""
    inner = out.relative_to(run_dir).parts
    if len(inner) < 2 or inner[0].startswith("seed-"):
        return spec
    return {**spec, "title": f"{inner[0]}: {spec['title']}"}


def generate(repo: Path = REPO_ROOT, configfiles: list[str] | None = None) -> dict:
    """The content of dvc.yaml for the workflow in `repo` with the given config files."""
    configfiles = [DEFAULT_CONFIG, *[f for f in (configfiles or []) if f != DEFAULT_CONFIG]]
    # Strictly, before Snakemake loads them: it would run a YTE template's code (check_files).
    check_files([repo / f for f in configfiles])
    jobs, config, ancient = _pinned_jobs(repo, configfiles)
    run_dir = Path(config["output_dir"]) / config["run_name"]
    stamp = str(run_dir / DAG_STAMP)
    produced = {out for job in jobs for out in job.outputs}
    stages = {CHECK_STAGE: _check_stage(repo, configfiles, stamp)}
    trees, known_code = _config_trees(repo, configfiles), {}
    # A sweep's module jobs (point<i>_..., main<i>_...) read their point's config
    # (lrdecay.config.sweep): their params are matched to it, and the sweep key is a param of
    # theirs.
    modules, point_dirs = {}, ()
    if SWEEP_KEY in config:
        grid = expand(config)
        modules = {m.module: m.config for m in (*grid.mains, *grid.points)}
        point_dirs = tuple(Path(p.config["output_dir"]) / p.config["run_name"]
                           for p in grid.points)
    for name, group in stage_groups(jobs).items():
        # no upstream stage: run after the DAG check
        first = not produced & {f for job in group for f in job.inputs}
        module = group[0].rule.split("_", 1)[0]
        stages[name] = _job_stage(repo, group, configfiles, modules.get(module, config),
                                  ancient.get(group[0].rule, ()), stamp if first else None,
                                  trees, known_code, module in modules)
    prefix = ""
    if pipeline_path(configfiles, config["run_name"]) != Path(DVC_YAML):
        # Stage paths stay relative to the repository root (wdir); plot paths are relative to
        # the dvc.yaml that lists them.
        for stage in stages.values():
            stage["wdir"] = "../.."
        prefix = "../../"
    return {"stages": stages, "plots": _plots(run_dir, _owners(stages), prefix, point_dirs)}


def render(content: dict) -> str:
    """dvc.yaml text: the header, then stable YAML (no key sorting, so diffs stay readable)."""
    body = yaml.safe_dump(content, sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + body.replace(": null\n", ":\n")


def main(argv: list[str] | None = None) -> int:
    """Write the pipeline's dvc.yaml (or, with --check, fail when it is out of date)."""
    parser = argparse.ArgumentParser(prog="python -m lrdecay.tooling.dvcgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", nargs="*", default=[],
                        help="config files on top of config.yaml, as given to snakemake")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="only check dvc.yaml is current")
    parser.add_argument("--stamp", help="with --check: write this file when the check passes")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    try:
        text = render(generate(repo, args.configfile))
    except ConfigError as err:
        print(f"python -m lrdecay.tooling.dvcgen: {err} No stage has run.", file=sys.stderr)
        return 2
    configfiles = [DEFAULT_CONFIG, *args.configfile]
    path = pipeline_path(configfiles, run_name(repo, configfiles))
    target = repo / path
    if args.check:
        if not target.exists() or target.read_text() != text:
            regenerate = " ".join(["python -m lrdecay.tooling.dvcgen",
                                   *(["--configfile", *args.configfile] if args.configfile
                                     else [])])
            print(f"{path} no longer matches the Snakemake DAG of this config (a "
                  f"config or rule change added, removed or renamed jobs). No stage has run. "
                  f"Regenerate it with `{regenerate}`, commit it, then rerun `dvc repro"
                  f"{'' if path == Path(DVC_YAML) else f' {path}'}`.",
                  file=sys.stderr)
            return 1
        if args.stamp:
            write_text(repo / args.stamp, STAMP_TEXT)
        return 0
    write_text(target, text)  # atomic: an interrupted run never leaves half a dvc.yaml
    print(f"wrote {path} ({len(yaml.safe_load(text)['stages'])} stages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
