"""Sweeps (lrdecay.config.sweep, workflow/rules/sweep.smk): the grid's points, their names and
validation; points that differ only in subpath keys train one main path (jobs counted in
Snakemake dry runs); the comparison table's rows are the points' own tables."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lrdecay.analysis import claims as analysis
from lrdecay.analysis import comparison
from lrdecay.config import sweep
from lrdecay.config import validate as lrconfig
from lrdecay.study import plan

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "tiny.yaml"
SUBPATH_LRS = [0.01, 0.02, 0.05]


def tiny_with(tmp_path: Path, grid: dict, **overrides: object) -> dict:
    """The tiny preset as Snakemake merges it, with `grid` as its sweep."""
    config = lrconfig.load(TINY, overrides={"output_dir": str(tmp_path / "results"),
                                            "run_name": "sw", **overrides})
    config["sweep"] = copy.deepcopy(grid)
    return config


def test_points_are_the_product_with_readable_names(tmp_path: Path) -> None:
    grid = {"optimizer.subpath_lr": [0.01, 0.02],
            "schedule.decay": [{"shape": "step", "epochs": 0}, {"epochs": 2, "shape": "linear"}]}
    result = sweep.expand(tiny_with(tmp_path, grid))
    assert [p.name for p in result.points] == [
        "subpath_lr=0.01,decay=step-0", "subpath_lr=0.01,decay=linear-2",
        "subpath_lr=0.02,decay=step-0", "subpath_lr=0.02,decay=linear-2"]
    point = result.point("subpath_lr=0.02,decay=linear-2")
    assert point.config["optimizer"]["subpath_lr"] == 0.02
    assert point.config["schedule"]["decay"] == {"shape": "linear", "epochs": 2}
    assert point.config["optimizer"]["main_lr"] == 0.1  # the rest is the run's
    assert point.config["run_name"] == point.name
    assert Path(point.config["output_dir"]) == tmp_path / "results" / "sw"
    # subpath keys only: one main path, which every point's subpaths read
    assert [m.name for m in result.mains] == ["main-path"]
    shared = tmp_path / "results" / "sw" / "main-path"
    for p in result.points:
        assert Path(p.config["main_path_dir"]) == shared
        assert plan.Plan(plan.for_seed(p.config, 0)).branch_state(2) == \
            shared / "seed-0" / "main" / "segment-0003" / "branch-0002.pt"


def test_a_main_path_key_gets_its_own_main_path(tmp_path: Path) -> None:
    grid = {"optimizer.main_lr": [0.1, 0.05], "optimizer.subpath_lr": SUBPATH_LRS}
    result = sweep.expand(tiny_with(tmp_path, grid))
    assert [m.name for m in result.mains] == ["main-path,main_lr=0.1", "main-path,main_lr=0.05"]
    for main in result.mains:
        assert len(main.points) == 3
        lrs = {result.point(name).config["optimizer"]["main_lr"] for name in main.points}
        assert lrs == {main.config["optimizer"]["main_lr"]}
        assert {sweep.main_values(result.point(n).config) for n in main.points} == \
            {sweep.main_values(main.config)}
    assert sweep.main_values(result.mains[0].config) != sweep.main_values(result.mains[1].config)


def test_a_main_path_key_at_the_same_value_in_effect_shares(tmp_path: Path) -> None:
    """Sharing follows what the main path reads, not the key's name: a section swept with
    values that differ only in a subpath key gives one main path."""
    opt = lrconfig.load(TINY)["optimizer"]
    grid = {"optimizer": [{**opt, "subpath_lr": 0.01}, {**opt, "subpath_lr": 0.02}]}
    result = sweep.expand(tiny_with(tmp_path, grid))
    assert len(result.mains) == 1 and len(result.points) == 2


@pytest.mark.parametrize(("grid", "message"), [
    ({"optimizer.subpath_rate": [0.1]}, r"sweep\.optimizer\.subpath_rate: no such config key"),
    ({"run_name": ["a", "b"]}, r"sweep\.run_name: run_name cannot be swept"),
    ({"output_dir": ["a"]}, r"sweep\.output_dir: output_dir cannot be swept"),
    ({"seeds": [[0], [1]]}, r"sweep\.seeds: seeds cannot be swept.*set seeds"),
    ({"toy.d": [8, 16]}, r"sweep\.toy\.d: toy cannot be swept"),
    ({"optimizer.subpath_lr": []}, r"sweep\.optimizer\.subpath_lr = \[\]: must be a non-empty"),
    ({"optimizer.subpath_lr": 0.02}, r"sweep\.optimizer\.subpath_lr = 0\.02: must be a non-empty"),
    ({"optimizer.subpath_lr": [0.02, 0.02]}, r"listed twice"),
    ({"schedule.decay": [{"shape": "step", "epochs": 0}], "schedule.decay.shape": ["step"]},
     r"schedule\.decay and schedule\.decay\.shape are both swept"),
    ({"optimizer.subpath_lr": [0.01, -1.0]},
     r"(?s)sweep point 'subpath_lr=-1\.0' \(optimizer\.subpath_lr = -1\.0\): "
     r".*optimizer\.subpath_lr"),
    ({"schedule.decay": [{"shape": "step", "epochs": 0}, {"shape": "linear", "epochs": 9}]},
     r"(?s)sweep point 'decay=linear-9' \(schedule\.decay = .*\): .*schedule\.decay\.epochs = 9"),
    ({"model.hidden": [[32], [16, 16]], "data.name": ["nope"]},
     r"(?s)sweep point 'hidden=32,name=nope'.*data\.name"),
])
def test_bad_sweeps_are_refused_naming_the_key(tmp_path: Path, grid: dict,
                                               message: str) -> None:
    with pytest.raises(lrconfig.ConfigError, match=message):
        sweep.expand(tiny_with(tmp_path, grid))


def snakemake_dry(tmp_path: Path, grid: dict) -> str:
    """A dry run of the tiny preset with `grid` as its sweep; its output (the job list)."""
    extra = tmp_path / "sweep.yaml"
    extra.write_text(yaml.safe_dump({"run_name": "sw", "sweep": grid}))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory",
         str(tmp_path), "--configfile", str(TINY), str(extra), "--config",
         f"output_dir={tmp_path / 'results'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


def job_counts(output: str) -> dict[str, int]:
    """rule -> number of jobs, from the dry run's job stats."""
    stats = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE)}


def subpath_inputs(output: str) -> dict[str, set[str]]:
    """point module -> the main-path segment folders its subpath jobs read."""
    found: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", output):
        rule = re.search(r"^(?:local)?rule (point\d+)_subpath_group:", block, re.MULTILINE)
        if rule:
            inputs = re.search(r"^\s+input: (.*)$", block, re.MULTILINE).group(1).split(", ")
            found.setdefault(rule.group(1), set()).update(
                str(Path(f).parent.parent.parent.name) for f in inputs if "/segment-" in f)
    return found


def test_three_subpath_points_train_the_main_path_once(tmp_path: Path) -> None:
    """The tiny main path is 3 jobs (initial state, two segments): a sweep of 3 subpath lrs
    has 3 main-path jobs, not 9, and 3 x 2 subpath groups, all branching from main-path/."""
    out = snakemake_dry(tmp_path, {"optimizer.subpath_lr": SUBPATH_LRS})
    counts = job_counts(out)
    main = {rule: n for rule, n in counts.items() if rule.endswith("_main_segment")}
    assert main == {"main0_main_segment": 3}
    assert {r: n for r, n in counts.items() if r.endswith("_subpath_group")} == {
        "point0_subpath_group": 2, "point1_subpath_group": 2, "point2_subpath_group": 2}
    assert counts["sweep_table"] == 1 and counts["sweep_figure"] == 1
    assert subpath_inputs(out) == {f"point{i}": {"main-path"} for i in range(3)}


def test_points_differing_in_a_main_path_key_train_their_own(tmp_path: Path) -> None:
    out = snakemake_dry(tmp_path, {"optimizer.main_lr": [0.1, 0.05],
                                   "optimizer.subpath_lr": [0.01, 0.02]})
    counts = job_counts(out)
    assert {r: n for r, n in counts.items() if r.endswith("_main_segment")} == {
        "main0_main_segment": 3, "main1_main_segment": 3}
    # points 0, 1 have main_lr 0.1, points 2, 3 main_lr 0.05: each reads its own main path
    assert subpath_inputs(out) == {
        "point0": {"main-path,main_lr=0.1"}, "point1": {"main-path,main_lr=0.1"},
        "point2": {"main-path,main_lr=0.05"}, "point3": {"main-path,main_lr=0.05"}}
    params = re.findall(r"rule (main\d)_main_segment:.*?\n\s+jobid", out, re.DOTALL)
    assert sorted(set(params)) == ["main0", "main1"]


def seed_table(rng: np.random.Generator, offset: float) -> pd.DataFrame:
    """A seed's decay_timing.csv with made-up losses."""
    branches = [2, 4, 6]
    final = offset + rng.uniform(0, 0.1, 3)
    main = offset + rng.uniform(0, 0.1, 3)
    return pd.DataFrame({
        "branch_epoch": branches, "total_epoch": [b + 3 for b in branches],
        "subpath_final_train_loss": final / 2, "subpath_final_test_loss": final,
        "subpath_final_test_acc": 0.5, "main_test_loss_at_branch": main + 0.1,
        "main_test_loss_at_total_epoch": main, "decay_gain_vs_main_same_epoch": main - final,
        "control": "computed"})


def test_comparison_rows_are_each_points_table() -> None:
    """Each row of sweep.csv holds its point's own values (3 points of 3 seeds, made-up
    losses far apart per point, so a row from another point cannot match)."""
    rng = np.random.default_rng(0)
    points = [{"point": f"subpath_lr={lr}", "main_path": "main-path",
               "optimizer.subpath_lr": lr} for lr in SUBPATH_LRS]
    per_seed = [{s: seed_table(rng, 1.0 + i) for s in range(3)} for i in range(3)]
    timings = [analysis.aggregate_decay_timing(t) for t in per_seed]
    table = comparison.table(points, timings)
    assert len(table) == 9
    for point, seeds in zip(points, per_seed, strict=True):
        rows = table[table["point"] == point["point"]].set_index("branch_epoch")
        assert (rows["optimizer.subpath_lr"] == point["optimizer.subpath_lr"]).all()
        assert (rows["n_seeds"] == 3).all()
        for branch in (2, 4, 6):
            final = [t.set_index("branch_epoch").loc[branch, "subpath_final_test_loss"]
                     for t in seeds.values()]
            gain = [t.set_index("branch_epoch").loc[branch, "decay_gain_vs_main_same_epoch"]
                    for t in seeds.values()]
            assert rows.loc[branch, "final_test_loss_mean"] == pytest.approx(np.mean(final))
            assert rows.loc[branch, "final_test_loss_std"] == pytest.approx(np.std(final, ddof=1))
            assert rows.loc[branch, "decay_gain_mean"] == pytest.approx(np.mean(gain))
            assert rows.loc[branch, "final_test_loss_ci_low"] < np.mean(final) < \
                rows.loc[branch, "final_test_loss_ci_high"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """The tiny preset swept over 2 subpath lrs, run to its comparison table."""
    work = tmp_path_factory.mktemp("sweep")
    extra = work / "sweep.yaml"
    extra.write_text(yaml.safe_dump({"run_name": "sw",
                                     "sweep": {"optimizer.subpath_lr": [0.01, 0.05]}}))
    run = work / "results" / "sw"
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"),
         "--directory", str(work), "--configfile", str(TINY), str(extra), "--config",
         f"output_dir={work / 'results'}", "--", str(run / sweep.TABLE)],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return run


def test_swept_run_table_equals_the_points_tables(tiny_sweep: Path) -> None:
    table = pd.read_csv(tiny_sweep / sweep.TABLE)
    assert list(table["point"].unique()) == ["subpath_lr=0.01", "subpath_lr=0.05"]
    for name, rows in table.groupby("point"):
        own = pd.read_csv(tiny_sweep / name / "decay_timing.csv")
        final = own[own["quantity"] == "subpath_final_test_loss"].set_index("branch_epoch")
        seed0 = pd.read_csv(tiny_sweep / name / "seed-0" / "decay_timing.csv")
        rows = rows.set_index("branch_epoch")
        assert list(rows.index) == list(final.index) == list(seed0["branch_epoch"])
        assert (rows["final_test_loss_mean"] == final["mean"]).all()
        assert (rows["final_test_loss_mean"].to_numpy()
                == seed0["subpath_final_test_loss"].to_numpy()).all()  # one seed
    # the two points' subpaths differ, their shared main path does not
    a, b = (table[table["point"] == n]["final_test_loss_mean"].to_numpy()
            for n in ("subpath_lr=0.01", "subpath_lr=0.05"))
    assert not np.allclose(a, b)
    assert not (tiny_sweep / "subpath_lr=0.01" / "seed-0" / "main").exists()
    assert (tiny_sweep / "main-path" / "seed-0" / "main" / "segment-0006").is_dir()


def test_the_cooldown_preset_is_one_sweep_sharing_one_main_path() -> None:
    config = lrconfig.load(REPO / "config.yaml", REPO / "config" / "cooldown.yaml")
    result = sweep.expand(config)
    assert [p.name for p in result.points] == ["decay=step-0", "decay=linear-10", "decay=sqrt-10"]
    assert [m.name for m in result.mains] == ["main-path"]
    for point in result.points:
        assert point.config["seeds"] == [0, 1, 2]
        assert point.config["schedule"]["subpath_epochs"] == 50
    assert result.point("decay=sqrt-10").config["schedule"]["decay"] == {"shape": "sqrt",
                                                                         "epochs": 10}
