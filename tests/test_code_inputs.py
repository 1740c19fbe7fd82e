"""Code as input: editing a module of lrdecay/ reruns, under plain Snakemake, exactly the jobs
whose script imports it (their `code` input, workflow/rules/common.smk's code(): the import
closure lrdecay.dvcgen.code_files also gives DVC's deps) and what follows them; editing a test
file or the README reruns nothing. The run is a tiny study's DAG with every output in place
(empty files and folders of one mtime, no job run): Snakemake's mtime trigger is what is under
test, and it reads only mtimes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from lrdecay import dvcgen

from .conftest import REPO, make_config_yaml_tiny, sh, working_tree_copy

# A module -> the rules whose jobs import it (by hand, as tests/test_dvc.py's RERUN_BY_FILE, not
# from the closure under test); an edit reruns these and their downstream jobs.
EDITS = {
    "lrdecay/stacked.py": {"subpath_group"},  # the vmap code: subpaths only, no main path
    "lrdecay/toy/simulate.py": {"toy_checks", "toy_table"},
    "lrdecay/figures.py": {"figure1", "figure2", "figure_mechanism", "toy_figure3",
                           "toy_figures"},
    "lrdecay/config.py": set(),  # validation only: no job imports it (DVC: the DAG check)
    "README.md": set(),
    "tests/test_cli.py": set(),
}
OLD, NOW = 1_600_000_000, 1_700_000_000  # mtimes: the code's, and every output's


def dry_run(repo: Path) -> dict[str, int]:
    """Rule -> jobs `snakemake -n` schedules in `repo` ({} when nothing is to be done)."""
    output = sh(repo, "snakemake", "-n", "--cores", "1", timeout=120)
    table = output.partition("Job stats:")[2].split("\n\n")[0]
    rows = (re.fullmatch(r"(\w+)\s+(\d+)", line.strip()) for line in table.splitlines())
    return {row[1]: int(row[2]) for row in rows if row and row[1] not in ("total", "all")}


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dvcgen.Job]]:
    """A copy of this checkout as the tiny study with every job's outputs in place, newer than
    every file of the checkout, and the DAG's jobs."""
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


@pytest.mark.parametrize("path", EDITS, ids=list(EDITS))
def test_an_edit_reruns_exactly_the_jobs_that_import_it(
        placed: tuple[Path, list[dvcgen.Job]], path: str) -> None:
    """An appended comment (a newer mtime) schedules the jobs of EDITS[path] and their
    downstream jobs, nothing else; under DVC the same rules' stages list the file as a dep (the
    committed quick-preset pipeline: `dvc status` reports those stages)."""
    repo, jobs = placed
    target = repo / path
    original = target.read_text()
    target.write_text(original + "\n# an edit\n")
    try:
        scheduled = dry_run(repo)
    finally:
        target.write_text(original)
        os.utime(target, (OLD, OLD))
    assert set(scheduled) == downstream(jobs, EDITS[path]), scheduled
    stages = yaml.safe_load((REPO / dvcgen.DVC_YAML).read_text())["stages"]
    under_dvc = {name.split("-")[0] for name, stage in stages.items() if path in stage["deps"]}
    assert under_dvc - {dvcgen.CHECK_STAGE} == EDITS[path], under_dvc


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
