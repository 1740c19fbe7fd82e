"""DVC on top of Snakemake: dvc.yaml matches the DAG, and repro/push/pull rerun only what changed.

The end-to-end test works the way a user would: a fresh clone builds everything with `dvc repro`
and pushes to the (default, folder) remote; a second fresh clone pulls and `dvc repro` runs
nothing; a change to figure code reruns only the figure stages; a forced stage reruns only its
own Snakemake job although `dvc pull` left mtimes in an arbitrary order.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from lrdecay.config import sweep
from lrdecay.config import validate as lrconfig
from lrdecay.tooling import dvcgen

# The shared tiny preset with fewer jobs (every DVC stage is one Snakemake start: fewer is faster),
# and the helpers that copy this checkout and run commands in the copy: tests/conftest.py.
from tests.conftest import REPO, edit_config_yaml, sh, working_tree_copy
from tests.conftest import checkout_env as env
from tests.conftest import make_config_yaml_tiny as tiny_config


@functools.cache
def generated(*extra: str) -> dict:
    """dvcgen.generate for this checkout with config.yaml and `extra` (built once per module:
    each builds the Snakemake DAG twice); callers only read it."""
    return dvcgen.generate(REPO, list(extra))


def ran_stages(repro_output: str) -> set[str]:
    """Stages `dvc repro` ran (it prints "Running stage 'name':" for each)."""
    return set(re.findall(r"Running stage '([^']+)'", repro_output))


def snakemake_runs(repo: Path) -> list[Path]:
    """One log per Snakemake invocation (none when no stage ran)."""
    return sorted((repo / ".snakemake" / "log").glob("*.snakemake.log"))


@pytest.mark.parametrize("preset", [None, "config/authors.yaml"])
def test_dvc_yaml_is_generated_from_the_dag(preset: str | None) -> None:
    """Each committed pipeline is what the generator makes of today's DAG (no drift), and the
    presets live side by side: generating one does not replace another's stages."""
    extra = [preset] if preset else []
    path = dvcgen.pipeline_path(["config.yaml", *extra],
                                dvcgen.run_name(REPO, ["config.yaml", *extra]))
    assert path == (Path("pipelines/authors/dvc.yaml") if preset else Path("dvc.yaml"))
    content = generated(*extra)
    # Only the quick preset's pipeline is committed (another preset's is generated when it is
    # built, so that plain `dvc status` speaks of built stages only); one generated here is current.
    assert preset or (REPO / path).is_file()
    assert not (REPO / path).is_file() or (REPO / path).read_text() == dvcgen.render(content), (
        f"{path} is out of date with the Snakemake DAG: run `python -m lrdecay.tooling.dvcgen"
        f"{' --configfile ' + preset if preset else ''}`"
    )
    stages = content["stages"]
    first = next(iter(stages))
    assert first == dvcgen.CHECK_STAGE and "--check" in stages[first]["cmd"]
    if preset:  # paths from the repository root, this preset's run folder, its config file
        assert all(stage["wdir"] == "../.." for stage in stages.values())
        assert all("results/authors/" in out for s in stages.values() for out in s.get("outs", []))
        assert all(["--configfile", preset] == s["cmd"].split()[-2:]
                   for name, s in stages.items() if name != dvcgen.CHECK_STAGE)
        assert all(list(plot)[0].startswith("../../results/authors/") for plot in content["plots"])


def test_a_sweeps_plots_cover_every_point_and_seed_titled_by_point() -> None:
    """`dvc plots show` for the cooldown sweep: learning curves for each point x seed and each
    point's tables, every title leading with its point (the points' files share their names)."""
    config = lrconfig.load(REPO / "config.yaml", REPO / "config" / "cooldown.yaml")
    grid = sweep.expand(config)
    plots = {list(p)[0]: list(p.values())[0] for p in generated("config/cooldown.yaml")["plots"]}
    run = f"../../results/{config['run_name']}"
    for point in grid.points:
        for seed in point.config["seeds"]:
            folder = f"{run}/{point.name}/seed-{seed}"
            for column in dvcgen.CURVE_COLUMNS:
                title = plots[f"{folder}/learning_curves/{column}"]["title"]
                assert title.startswith(f"Learning curves, {point.name}, seed-{seed}:"), title
            for table in ("decay_timing.csv", "pca/explained_variance.csv"):
                assert plots[f"{folder}/{table}"]["title"].startswith(f"{point.name}: ")
    assert not plots[f"{run}/sweep.csv"]["title"].startswith("decay=")
    assert f"{run}/figures/sweep_decay_timing.png" in plots


SNAKEFILE = """\
configfile: "config.yaml"


def previous(wildcards):
    n = int(wildcards.n)
    return f"out/b-{n - 1}.txt" if n else "out/a-0.txt"


rule all:
    input:
        "out/b-1.txt",


rule make:
    output:
        "out/a-{n}.txt",
    params:
        size=config["size"],
    script:
        "scripts/make.py"


rule step:
    input:
        prev=previous,
    output:
        "out/b-{n}.txt",
    shell:
        "cat {input.prev} > {output}"
"""


def test_snakemake_dag_access(tmp_path: Path) -> None:
    """dvcgen reads Snakemake's DAG through private objects (no public API hands out jobs;
    lrdecay.tooling.dvcgen._snakemake_dag says why): on a small workflow, every field it takes from
    them is exactly what the Snakefile says, so a Snakemake release that changes them fails here."""
    import snakemake

    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "config.yaml").write_text("size: 3\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "make.py").write_text("")
    where = (f"Snakemake {snakemake.__version__} (dvcgen is tested with "
             f"{dvcgen.SNAKEMAKE_TESTED}): see lrdecay.tooling.dvcgen._snakemake_dag")
    jobs, config = dvcgen._snakemake_jobs(tmp_path, ["config.yaml"], {"step": {"prev"}})
    assert config == {"size": 3}, where
    assert [job.stage for job in jobs] == ["make-0", "step-0", "step-1"], where  # not `all`
    make, first, second = jobs
    assert make == dvcgen.Job(
        rule="make", wildcards=("0",), wildcard_names=("n",), inputs=(), outputs=("out/a-0.txt",),
        params={"size": 3}, script=tmp_path.resolve() / "scripts" / "make.py",
        snakefile=tmp_path.resolve() / "Snakefile", input_names=(), ancient_inputs=(),
    ), where
    assert (first.inputs, first.input_names, first.script) == (("out/a-0.txt",), ("prev",),
                                                              None), where
    assert (second.inputs, second.ancient_inputs) == (("out/b-0.txt",), ("out/b-0.txt",)), where
    unflagged, _ = dvcgen._snakemake_jobs(tmp_path, ["config.yaml"], {})
    assert unflagged[2].ancient_inputs == (), where


def _job(rule: str, names: tuple[str, ...], values: tuple[str, ...], inputs: tuple[str, ...],
         output: str) -> dvcgen.Job:
    return dvcgen.Job(rule=rule, wildcards=values, wildcard_names=names, inputs=inputs,
                      outputs=(output,), params={}, script=None, snakefile=Path("Snakefile"),
                      input_names=(), ancient_inputs=())


def test_sibling_jobs_share_a_stage_per_seed_and_chains_do_not() -> None:
    """stage_groups: a rule's jobs within one seed (or with no seed) are one stage, whatever their
    other wildcards; seeds never share a stage (adding a seed must leave the others' stages as
    they are); a rule that feeds itself keeps a stage per job (one failing segment must not
    cost the finished ones); stages come producers first although the listing is by name."""
    jobs = [
        _job("zeta", (), (), (), "z.txt"),
        *[_job("seg", ("seed", "end"), (s, e), (f"s{s}-{p}",) if p else ("z.txt",), f"s{s}-{e}")
          for s in ("0", "1") for p, e in (("", "a"), ("a", "b"))],
        *[_job("group", ("seed", "group"), (s, g), (f"s{s}-{seg}",), f"g{s}-{g}")
          for s in ("0", "1") for g, seg in (("000", "a"), ("001", "b"))],
        *[_job("toy", ("gamma",), (g,), (), f"toy-{g}") for g in ("0.5", "2")],
    ]
    groups = dvcgen.stage_groups(jobs)
    members = {name: [job.outputs[0] for job in group] for name, group in groups.items()}
    assert members == {
        "seg-0-a": ["s0-a"], "seg-1-a": ["s1-a"], "seg-0-b": ["s0-b"], "seg-1-b": ["s1-b"],
        "group-0": ["g0-000", "g0-001"], "group-1": ["g1-000", "g1-001"],
        "toy": ["toy-0.5", "toy-2"], "zeta": ["z.txt"],
    }
    order = list(groups)
    assert order.index("zeta") < order.index("seg-0-a") < order.index("seg-0-b") < order.index(
        "group-0"), order
    # the command runs every job of the stage, and lets siblings finish when one fails
    cmd = dvcgen.command(groups["group-0"], ["config.yaml"], ())
    assert cmd.split()[1:3] == ["g0-000", "g0-001"] and "--keep-going" in cmd
    assert "--keep-going" not in dvcgen.command(groups["seg-0-b"], ["config.yaml"], ())


def test_stages_own_disjoint_outputs_and_mirror_jobs() -> None:
    """No output (or folder around one) has two owners; figures come from figure stages only."""
    stages = generated()["stages"]
    outs = [(name, out) for name, stage in stages.items()
            for out in stage.get("outs", []) + stage.get("metrics", [])]
    for i, (name, out) in enumerate(outs):
        for other, path in outs[i + 1:]:
            assert out != path and not path.startswith(out + "/") and not out.startswith(
                path + "/"), f"{name} and {other} overlap at {out} / {path}"
    for name, out in outs:
        if "/figures/" in out:
            assert name.startswith("figure"), f"{out} is owned by {name}"
        assert "/.resume" not in out and "/logs/" not in out
    # every stage runs exactly its own job, pinned against mtime-driven upstream reruns; stages
    # without an upstream stage wait for the DAG check
    for name, stage in stages.items():
        if name == dvcgen.CHECK_STAGE:
            continue
        stamp = "results/quick/" + dvcgen.DAG_STAMP
        upstream = any(d.startswith("results/") and d != stamp for d in stage["deps"])
        assert upstream or stamp in stage["deps"], name
        rule = name.split("-")[0]
        assert f"--allowed-rules {rule}" in stage["cmd"]
    # a seed's sibling jobs share one stage, which runs them all (in one Snakemake call)
    assert stages["subpath_group-0"]["outs"] == [
        "results/quick/seed-0/subpaths/group-000", "results/quick/seed-0/subpaths/group-001"]
    assert stages["subpath_group-0"]["cmd"].split()[1:3] == stages["subpath_group-0"]["outs"]
    assert len(stages["toy_checks"]["outs"]) == 4 * 3  # 3 gammas, 4 files each
    first_segment = next(name for name in stages if name.startswith("main_segment-")
                         and not name.endswith("-0000"))
    # code too: a module's checkout mtime must not rerun an upstream segment
    assert "--consider-ancient main_segment=code,data,previous" in stages[first_segment]["cmd"]
    params = stages[first_segment]["params"][0]["config.yaml"]
    assert "results/quick/data/dataset.pt.json" in stages["prepare_data"]["outs"]
    # the keys the main path declares (lrdecay.study.plan.MAIN_PATH), none of the subpaths' only
    assert {"optimizer.main_lr", "schedule.main_epochs", "device", "engine.bf16",
            "engine.compile"} <= set(params)
    assert not {"optimizer", "schedule", "optimizer.subpath_lr"} & set(params), params
    assert "lrdecay/analysis/figures.py" not in stages["pca-0"]["deps"]
    assert "lrdecay/analysis/figures.py" in stages["figure1"]["deps"]
    assert stages["summary"]["metrics"] == ["results/quick/headline.json"]
    # DVC warns about every empty dependency ("'lrdecay/toy/__init__.py' is empty")
    deps = {d for stage in stages.values() for d in stage["deps"] if not d.startswith("results/")}
    assert not [d for d in deps if (REPO / d).stat().st_size == 0]


# Which rules' stages a code change reruns (DVC deps follow the imports of each job's script).
# Each row is a module boundary: the vmap code (K subpaths at once) is imported by the subpath
# groups only, never by main-path segments or landscape shards; figure code never reruns
# training, PCA or the toy simulations; the model registry never reruns the toy model.
RERUN_BY_FILE = {
    "lrdecay/training/stacked.py": {"subpath_group"},
    "lrdecay/training/subpaths.py": {"subpath_group"},
    "lrdecay/toy/figures.py": {"toy_figure3", "toy_figures"},
    "lrdecay/analysis/figures.py": {"figure1", "figure2", "figure_mechanism", "toy_figure3",
                                    "toy_figures"},
    "lrdecay/toy/simulate.py": {"toy_checks", "toy_table"},
    # validation, registries' checks and resource requests: only the DAG check (jobs read their
    # plan from lrdecay.study.plan)
    "lrdecay/config/validate.py": {"check_dag"},
    "lrdecay/config/resources.py": {"check_dag"},
}
NEVER_RERUN_BY = {  # rules a change to the file must not rerun (it may rerun others)
    "lrdecay/training/engine.py": {"toy_checks", "toy_figures", "toy_figure3", "toy_table", "pca",
                          "figure1", "figure2", "claims", "summary"},
    "lrdecay/training/models.py": {"toy_checks", "toy_figures", "toy_figure3", "toy_table", "pca",
                          "gather_training"},
}


def test_a_code_change_reruns_only_the_stages_that_run_it() -> None:
    """The generated deps name a module only in the stages whose jobs import it (the quick
    preset's pipeline: `dvc status` reports exactly these stages after an edit, as the slow test
    shows for the vmap code)."""
    stages = generated()["stages"]

    def rerun_by(path: str) -> set[str]:
        assert (REPO / path).is_file(), path
        return {name.split("-")[0] for name, stage in stages.items() if path in stage["deps"]}

    for path, rules in RERUN_BY_FILE.items():
        assert rerun_by(path) == rules, path
    for path, rules in NEVER_RERUN_BY.items():
        assert rerun_by(path) and not rerun_by(path) & rules, (path, rerun_by(path) & rules)
    assert "main_segment" in rerun_by("lrdecay/training/engine.py")


def changed_stages(repo: Path) -> set[str]:
    """Stages of the quick preset's pipeline that `dvc status` reports as changed."""
    return set(json.loads(sh(repo, "dvc", "status", "--json", "dvc.yaml") or "{}"))


@pytest.mark.slow
def test_repro_push_pull_and_figure_only_change(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    working_tree_copy(origin)
    run = tiny_config(origin)
    edit_config_yaml(origin, toy={"gammas": [1.0, 2.0]})  # a stage of two sibling jobs
    sh(origin, "git", "init", "-q", "-b", "main")
    sh(origin, "python", "-m", "lrdecay.tooling.dvcgen")
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-q", "-m", "tiny study")
    stages = set(yaml.safe_load((origin / "dvc.yaml").read_text())["stages"])
    # Figure code reruns the figure stages (the toy figures share lrdecay.analysis.figures' style
    # and save), never training, PCA or the toy simulations.
    figure_stages = {"figure1", "figure2", "figure_mechanism", "toy_figure3", "toy_figures"}
    assert figure_stages <= stages

    # 1. A fresh clone builds everything, records it in dvc.lock and pushes it; no warnings.
    first = tmp_path / "first"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(first))
    built = sh(first, "dvc", "repro")
    assert ran_stages(built) == stages
    # one Snakemake run of jobs per stage (the check stage's DAG builds leave empty logs), both
    # gammas in the toy one
    job_runs = [log for log in snakemake_runs(first) if "steps (100%) done" in log.read_text()]
    assert len(job_runs) == len(stages) - 1
    assert "toy_checks" in stages and built.count("2 of 2 steps (100%) done") == 1, built
    assert "WARNING" not in built, [line for line in built.splitlines() if "WARNING" in line]
    metrics = sh(first, "dvc", "metrics", "show")  # the headline numbers, as DVC users read them
    assert "pc1_pc2" in metrics and "best_decay_epoch" in metrics
    owned = [first / out for stage in yaml.safe_load((first / "dvc.lock").read_text())[
        "stages"].values() for out in (o["path"] for o in stage["outs"])]
    produced = [p for p in (first / "results").rglob("*") if p.is_file()
                and "logs" not in p.parts and ".resume" not in p.parts
                # owners of the folder, its jobs (lrdecay.core.lock)
                and not p.name.endswith(".lock")]
    unversioned = [str(p.relative_to(first)) for p in produced
                   if not any(p == o or o in p.parents for o in owned)]
    assert not unversioned, f"outputs DVC does not version: {unversioned}"
    sh(first, "git", "add", "dvc.lock")
    sh(first, "git", "commit", "-q", "-m", "results of the tiny study")
    sh(first, "dvc", "push", "dvc.yaml")  # this preset's pipeline (others: pipelines/<run>/)
    remote = tmp_path / "lrdecay-dvc-remote"  # the default remote: a folder beside the clone
    assert any(remote.rglob("*")), "dvc push wrote nothing to the default remote"

    # 2. A second fresh clone pulls; dvc repro then runs no stage and no Snakemake at all.
    second = tmp_path / "second"
    sh(tmp_path, "git", "clone", "-q", str(first), str(second))
    sh(second, "dvc", "pull", "dvc.yaml")
    assert "up to date" in sh(second, "dvc", "status", "dvc.yaml")
    repro = sh(second, "dvc", "repro")
    assert ran_stages(repro) == set(), repro
    assert snakemake_runs(second) == []

    # 3. Figure code only: only the figure stages run, each as one Snakemake job.
    with open(second / "lrdecay" / "analysis" / "figures.py", "a") as handle:
        handle.write("\n# a figure-code change\n")
    repro = sh(second, "dvc", "repro")
    assert ran_stages(repro) == figure_stages, repro
    assert len(snakemake_runs(second)) == len(figure_stages)
    assert repro.count("1 of 1 steps (100%) done") == len(figure_stages)
    # ... and the redrawn figures are byte-identical (PDFs without a creation date): DVC sees
    # no changed output, only the new code in dvc.lock.
    diff = json.loads(sh(second, "dvc", "diff", "--json"))  # (other presets: not built here)
    changed = [e["path"] for e in diff.get("modified", []) if e["path"].startswith(str(run))]
    assert not [p for p in changed if p.endswith((".pdf", ".png"))], changed

    # 3b. The vmap code only: `dvc status` names the subpath groups, not the main path, nor the
    #     landscape (outputs downstream of a group rerun only if its outputs change).
    assert changed_stages(second) == set()
    stacked = second / "lrdecay" / "training" / "stacked.py"
    original = stacked.read_text()
    stacked.write_text(original + "\n# a vmap-code change\n")
    groups = {s for s in stages if s.startswith("subpath_group-")}
    assert groups and changed_stages(second) == groups
    stacked.write_text(original)
    assert changed_stages(second) == set()

    # 4. After the pull, mtimes are arbitrary: make the data and the first segment newer than the
    #    last segment. A forced last segment still runs only its own job, not the chain upstream.
    run_dir = second / run
    last = max((run_dir / "seed-0" / "main").glob("segment-*"))
    for path in (run_dir / "data" / "dataset.pt",
                 *(run_dir / "seed-0" / "main" / "segment-0000").glob("*")):
        os.utime(path)  # including the .snakemake_timestamp Snakemake reads for a directory
    stage = f"main_segment-0-{last.name[8:]}"  # seed 0's
    repro = sh(second, "dvc", "repro", "--force", "--single-item", stage)
    assert ran_stages(repro) == {stage}
    assert "1 of 1 steps (100%) done" in repro, repro

    # 4b. One job of a shared stage fails: its sibling still finishes (--keep-going); rerunning
    #     the stage's command runs only the failed job, and `dvc commit` records the stage
    #     (README's recipe), with the same numbers as before (the toy checks are seeded).
    script = second / "workflow" / "scripts" / "toy_checks.py"
    original = script.read_text()
    script.write_text(original + "\nif snakemake.wildcards.gamma == '2':  # noqa: F821\n"
                      "    raise SystemExit('planted failure')\n")
    proc = subprocess.run(["dvc", "repro", "--single-item", "toy_checks"], cwd=second,
                          env=env(second), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "planted failure" in proc.stdout + proc.stderr
    assert "1 of 2 steps (50%) done" in proc.stdout + proc.stderr
    finished = run_dir / "toy" / "gamma-1" / "checks.csv"
    assert finished.is_file() and not (run_dir / "toy" / "gamma-2" / "checks.csv").exists()
    finished_at = finished.stat().st_mtime_ns
    script.write_text(original)
    rerun = sh(second, *yaml.safe_load((second / "dvc.yaml").read_text())["stages"][
        "toy_checks"]["cmd"].split())
    assert "1 of 1 steps (100%) done" in rerun and finished.stat().st_mtime_ns == finished_at
    sh(second, "dvc", "commit", "--force", "toy_checks")
    assert changed_stages(second) == set()

    # 5. A config change that alters the DAG (one more landscape shard) stops `dvc repro` before
    #    any Snakemake job, with the command to run; `dvc status` shows the check stage changed.
    edit_config_yaml(second, landscape={"shards": 2})
    assert dvcgen.CHECK_STAGE in sh(second, "dvc", "status", "dvc.yaml")
    proc = subprocess.run(["dvc", "repro"], cwd=second, env=env(second), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "Regenerate it with `python -m lrdecay.tooling.dvcgen`" in proc.stdout + proc.stderr
    assert ran_stages(proc.stdout + proc.stderr) == {dvcgen.CHECK_STAGE}
    assert "steps (100%) done" not in proc.stdout + proc.stderr  # no Snakemake job ran
    assert not (second / run / "seed-0" / "landscape" / "shard-001.csv").exists()
