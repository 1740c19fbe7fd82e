"""Config validation: every bad value stops with a message naming the key, before any job."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrdecay.config import validate as lrconfig
from lrdecay.core.basics import ConfigError
from lrdecay.study import plan

from .conftest import REPO, TINY, load_tiny

BAD_VALUES = [  # (overrides, key named in the message)
    ({"optimizer": {"main_lr": 0}}, "optimizer.main_lr"),
    ({"optimizer": {"main_lr": -0.1}}, "optimizer.main_lr"),
    ({"optimizer": {"subpath_lr": 0.0}}, "optimizer.subpath_lr"),
    ({"schedule": {"first_branch_epoch": 7}}, "schedule.first_branch_epoch"),
    ({"schedule": {"last_branch_epoch": 9}}, "schedule.last_branch_epoch"),
    ({"model": {"name": "resnet1000"}}, "model.name"),
    ({"data": {"name": "imagenet"}}, "data.name"),
    ({"data": {"train_per_class": 500}}, "data.train_per_class"),
    ({"data": {"test_per_class": 71}}, "data.test_per_class"),
    ({"landscape": {"points": [1, 5]}}, "landscape.points"),
    ({"landscape": {"shards": 0}}, "landscape.shards"),
    ({"optimizer": {"batch_size": 0}}, "optimizer.batch_size"),
    ({"model": {"name": "vgg11"}}, "model.name"),  # VGG on 8x8 digits
    ({"device": "tpu"}, "device"),
    ({"schedule": {"segment_epochs": 0}}, "schedule.segment_epochs"),
    ({"typo_key": 1}, "typo_key"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_VALUES)
def test_bad_value_names_key(tmp_path: Path, overrides: dict, key: str) -> None:
    with pytest.raises(lrconfig.ConfigError, match=key.replace(".", r"\.")):
        load_tiny(tmp_path, **overrides)


def test_defaults_filled_and_valid(tiny: dict) -> None:
    assert tiny["engine"]["tf32"] is True  # from the schema, not the preset
    assert tiny["pca"]["n_components"] == 5
    assert tiny["metrics"]["train_metric"] == "full_pass"


def test_message_names_value_and_rule(tmp_path: Path) -> None:
    with pytest.raises(lrconfig.ConfigError) as info:
        load_tiny(tmp_path, optimizer={"main_lr": 0})
    assert "optimizer.main_lr = 0: must be > 0" in str(info.value)


def test_plan_layout(tiny: dict) -> None:
    plan = lrconfig.Plan(tiny)
    assert plan.branch_epochs == [2, 4, 6]
    assert plan.segment_ends == [3, 6]
    assert plan.subpath_groups == [[2, 4], [6]]
    assert plan.segment_holding(2) == 3 and plan.segment_holding(6) == 6
    assert plan.branch_state(2).name == "branch-0002.pt"
    assert plan.branch_state(6).name == "state.pt"  # the segment's end state is the branch state
    assert plan.branches_in_segment(6) == [4, 6]
    seed_dir = plan.run_dir / "seed-0"  # a seed's config (load_tiny): its files under seed-0/
    assert plan.seed_dir() == seed_dir and plan.resume_dir == seed_dir / ".resume"
    assert plan.segment_dir(3) == seed_dir / "main" / "segment-0003"
    assert plan.group_dir(1) == seed_dir / "subpaths" / "group-001"
    assert plan.data_path == plan.run_dir / "data" / "dataset.pt"  # one dataset for all seeds


def test_a_seeds_jobs_depend_on_that_seed_alone(tmp_path: Path) -> None:
    """What a seed's jobs read (their params) and the training hash do not change when seeds are
    added; they do change with the seed. A params builder that passed the seed list would rerun
    every seed's training when one is added."""
    one = lrconfig.load(TINY, overrides={"output_dir": str(tmp_path), "seeds": [0]})
    three = lrconfig.load(TINY, overrides={"output_dir": str(tmp_path), "seeds": [2, 0, 5]})
    assert lrconfig.SUBPATHS.values(one) == lrconfig.SUBPATHS.values(three)
    params = {"seed": 5, "reads": lrconfig.SUBPATHS.values(three)}
    job = lrconfig.job_config(params, lrconfig.engine_run(three), lrconfig.SUBPATHS)  # as jobs do
    assert job["seed"] == 5 and "seeds" not in job
    assert job["engine"] == three["engine"] and job["model"] == three["model"]
    # the run settings are no params (no rerun trigger), the numeric ones are
    engine = {key for key in params["reads"] if key.startswith("engine.")}
    assert engine == {f"engine.{key}" for key in lrconfig.NUMERIC_ENGINE_KEYS}
    assert set(lrconfig.engine_run(three)) == {"threads", "checkpoint_seconds", "cudnn_benchmark"}
    for reads in (lrconfig.MAIN_PATH, lrconfig.SUBPATHS):
        hashes = {s: reads.hash(lrconfig.for_seed(three, s)) for s in (2, 0, 5)}
        assert hashes[0] == reads.hash(lrconfig.for_seed(one, 0))
        assert len(set(hashes.values())) == 3
    run = lrconfig.Plan(three)
    assert run.seeds == [2, 0, 5] and run.seed_dir(5) == run.run_dir / "seed-5"
    assert run.for_seed(5).segment_dir(3) == run.run_dir / "seed-5" / "main" / "segment-0003"
    with pytest.raises(lrconfig.ConfigError, match="seed 1 is not in config key seeds"):
        lrconfig.for_seed(three, 1)
    with pytest.raises(ValueError, match="use Plan.for_seed"):
        run.segment_dir(3)


def test_describe_counts_the_study_once_per_seed(tmp_path: Path) -> None:
    """`lrdecay describe`: model-epochs and snapshot storage scale with the number of seeds
    (tiny: 6 main-path epochs + 3 subpaths x 3 epochs = 15 per seed)."""
    from lrdecay.tooling.cli import study_size

    one = study_size(lrconfig.load(TINY, overrides={"output_dir": str(tmp_path)}))
    three = study_size(lrconfig.load(TINY, overrides={"output_dir": str(tmp_path),
                                                      "seeds": [0, 1, 2]}))
    assert (one["model_epochs_per_seed"], one["model_epochs"], one["n_seeds"]) == (15, 15, 1)
    assert (three["model_epochs_per_seed"], three["model_epochs"], three["n_seeds"]) == (15, 45, 3)
    assert three["snapshot_bytes"] == 3 * one["snapshot_bytes"]
    assert three["main_segment_jobs"] == one["main_segment_jobs"]  # per seed


@pytest.mark.parametrize("preset", ["paper", "authors"])
def test_presets_plan_every_stage(preset: str) -> None:
    """Both paper-scale presets plan the full DAG: 81 branch epochs 200..1000."""
    cfg = lrconfig.load(REPO / "config.yaml", REPO / "config" / f"{preset}.yaml")
    plan = lrconfig.Plan(cfg)
    assert plan.branch_epochs == list(range(200, 1001, 10))
    assert sum(len(g) for g in plan.subpath_groups) == 81


def _snakemake_dry_run(tmp_path: Path, overrides: dict) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load(TINY.read_text())
    for section, value in overrides.items():
        if isinstance(value, dict):
            cfg.setdefault(section, {}).update(value)
        else:
            cfg[section] = value
    cfg["output_dir"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
         "--directory", str(tmp_path), "--configfile", str(path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(("overrides", "message"), [
    ({"optimizer": {"main_lr": 0}}, "optimizer.main_lr = 0: must be > 0"),
    ({"toy": {"d": 16, "n": 16}}, "toy.n = 16: must be < toy.d = 16"),  # the toy section's rules
    ({"seed": 4}, "config key seed = 4: replaced by seeds, a list of training seeds (the study "
     "runs once per seed); use seeds: [4]"),  # the key before seeds
    ({"seeds": []}, "config key seeds = []: needs at least 1 items"),
])
def test_snakemake_stops_before_any_job(tmp_path: Path, overrides: dict, message: str) -> None:
    result = _snakemake_dry_run(tmp_path, overrides)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def _leaves(tree: dict, path: tuple = ()) -> list[tuple[tuple, object]]:
    return [leaf for key, value in tree.items()
            for leaf in (_leaves(value, (*path, key)) if isinstance(value, dict) and value
                         else [((*path, key), value)])]


def test_quick_preset_is_the_schema_defaults() -> None:
    """config.yaml (the quick preset) and the schemas' defaults agree key by key, so a preset
    read alone (`lrdecay describe config/authors.yaml`, lrdecay.config.validate.load) gets the same
    values as Snakemake, which merges it over config.yaml."""
    defaults = lrconfig.validate({})
    quick = lrconfig.read_yaml(REPO / "config.yaml")
    differ = []
    for path, value in _leaves(quick):
        default = defaults
        for key in path:
            default = default[key]
        if default != value:
            differ.append(f"{'.'.join(path)}: config.yaml {value!r}, schema default {default!r}")
    assert not differ, "change both (lrdecay/config/schemas/*.schema.yaml):\n" + "\n".join(differ)
    assert lrconfig.load(REPO / "config.yaml") == defaults


@pytest.mark.parametrize("preset", ["paper", "authors", "tiny", "quick-ce"])
def test_a_preset_alone_equals_it_over_the_quick_preset(preset: str) -> None:
    alone = lrconfig.load(REPO / "config" / f"{preset}.yaml")
    assert alone == lrconfig.load(REPO / "config.yaml", REPO / "config" / f"{preset}.yaml")


def test_registered_names_are_the_allowed_values(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """model.name and data.name accept exactly the registries' keys (no enum to keep in step)."""
    from lrdecay.training import data, models

    schema = lrconfig.load_schema()["properties"]
    assert schema["model"]["properties"]["name"]["enum"] == list(models.MODELS)
    assert schema["data"]["properties"]["name"]["enum"] == list(data.DATASETS)
    monkeypatch.setitem(models.MODELS, "mlp2", models.MODELS["mlp"])
    assert load_tiny(tmp_path, model={"name": "mlp2"})["model"]["name"] == "mlp2"
    with pytest.raises(lrconfig.ConfigError, match=r"model.name = 'mlp3': must be one of .*mlp2"):
        load_tiny(tmp_path, model={"name": "mlp3"})


# Nested overrides as Snakemake users write them; Snakemake hands their leaves over as strings.
NESTED_OVERRIDES = ["optimizer={main_lr: 0.05, momentum: 1e-1}",
                    "schedule={main_epochs: 8, last_branch_epoch: null}",
                    "landscape={points: [6, 5], margin: .5}", "data={augment: false}",
                    "seeds=[3.0, 1]"]


def test_nested_command_line_overrides_are_typed(tmp_path: Path) -> None:
    """Snakemake's own parser, then validation: every leaf has the schema's type."""
    from snakemake.cli import parse_config

    overrides = parse_config(NESTED_OVERRIDES)
    assert overrides["optimizer"]["main_lr"] == "0.05"  # what Snakemake hands over
    cfg = load_tiny(tmp_path, **overrides)
    assert cfg["optimizer"]["main_lr"] == 0.05 and cfg["optimizer"]["momentum"] == 0.1
    assert cfg["schedule"]["main_epochs"] == 8 and type(cfg["schedule"]["main_epochs"]) is int
    assert cfg["schedule"]["last_branch_epoch"] is None
    assert cfg["landscape"]["points"] == [6, 5] and cfg["landscape"]["margin"] == 0.5
    assert cfg["data"]["augment"] is False and cfg["seed"] == 3 and type(cfg["seed"]) is int
    assert cfg["optimizer"]["batch_size"] == 32  # the preset's other keys in the section stay


def _snakemake_cli(tmp_path: Path, *config: str, own_folder: bool = True
                   ) -> subprocess.CompletedProcess:
    """A dry run of the tiny preset under tmp_path (own_folder: an output_dir override too)."""
    folder = [f"output_dir={tmp_path}/results"] if own_folder else []
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
         "--configfile", str(TINY), "--config", *folder, *config],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def test_nested_overrides_through_snakemake(tmp_path: Path) -> None:
    """`--config 'optimizer={main_lr: 0.05}' 'schedule={main_epochs: 8}'` plans the longer
    main path (segments 0, 3, 6, 8), and a coerced bad value is named by its rule."""
    result = _snakemake_cli(tmp_path, "optimizer={main_lr: 0.05}", "schedule={main_epochs: 8}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"^main_segment\s+4$", result.stdout, re.MULTILINE), result.stdout
    bad = _snakemake_cli(tmp_path, "optimizer={main_lr: 0}")
    assert "config key optimizer.main_lr = 0: must be > 0" in bad.stdout + bad.stderr


def test_overrides_that_replace_the_preset_s_results_are_named(tmp_path: Path) -> None:
    """A `--config` override of what to compute keeps the preset's run_name, so its jobs rerun
    in the preset's folder: the dry run says which keys and how to keep both; a new run_name,
    added seeds and run settings replace nothing and say nothing."""
    warned = _snakemake_cli(tmp_path, "optimizer={subpath_lr: 0.02}", "schedule={main_epochs: 8}",
                            own_folder=False)
    assert warned.returncode == 0, warned.stderr[-2000:]
    assert ("WARNING: --config sets optimizer.subpath_lr, schedule.main_epochs for the run in "
            "results/tiny") in warned.stderr, warned.stderr[-2000:]
    assert "add run_name=<new name>" in warned.stderr
    for quiet in (("optimizer={subpath_lr: 0.02}", "run_name=lr002"),
                  ("seeds=[0, 1]", "engine={threads: 1, checkpoint_seconds: 5}")):
        result = _snakemake_cli(tmp_path, *quiet, own_folder=False)
        assert result.returncode == 0 and "WARNING: --config" not in result.stderr, quiet
    run = Path("results/tiny")
    assert plan.override_note({}, run) is None
    assert plan.override_note({"output_dir": "/x", "loss": "ce"}, run) is None
    assert plan.override_note({"engine": {"channels_last": False}}, run) is not None  # numbers
    assert "model.hidden" in plan.override_note({"model": {"hidden": [8]}, "seeds": [1]}, run)


def test_authors_cpu_preset_is_the_reduction_its_comment_states(tmp_path: Path) -> None:
    """config/authors-cpu.yaml (issue 26) keeps the authors' model, loss and optimiser, and its
    comment states the plan's own numbers: if either changes alone, this fails."""
    authors, cpu = REPO / "config" / "authors.yaml", REPO / "config" / "authors-cpu.yaml"
    cfg = lrconfig.load(authors, cpu)
    base = lrconfig.load(authors)
    for section in ("model", "loss", "optimizer"):
        assert cfg[section] == base[section], section
    assert (cfg["data"]["augment"], cfg["data"]["normalize"], cfg["device"]) == (True, True, "cpu")
    plan, sched = lrconfig.Plan(cfg), cfg["schedule"]
    steps_per_epoch = 10 * cfg["data"]["train_per_class"] // cfg["optimizer"]["batch_size"]
    branches = plan.branch_epochs
    comment = cpu.read_text()
    stated = [
        f"{cfg['data']['train_per_class']} training and {cfg['data']['test_per_class']} test "
        "images per class",
        f"main path {sched['main_epochs']} epochs = "
        f"{sched['main_epochs'] * steps_per_epoch:,} SGD steps",
        f"{len(branches)} branch points every {sched['branch_interval']} epochs from "
        f"{branches[0]} to {branches[-1]}",
        f"each subpath {sched['subpath_epochs']} epochs = "
        f"{sched['subpath_epochs'] * steps_per_epoch:,} steps",
        f"the main path runs on to {sched['main_epochs']} = {branches[-1]} + "
        f"{sched['subpath_epochs']}",
        f"snapshots every {cfg['trajectory']['every_epochs']} epochs",
        "Figure 2's grid {} x {}".format(*cfg["landscape"]["points"]),
        f"after {branches[0] * steps_per_epoch:,} steps at lr {cfg['optimizer']['main_lr']}",
    ]
    missing = [line for line in stated if line not in " ".join(comment.replace("#", "").split())]
    assert not missing, missing
    assert len(branches) >= 8 and plan.seeds == [0]
    # It plans under Snakemake (the data root need not exist for a dry run).
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "2",
         "--directory", str(tmp_path), "--configfile", str(authors), str(cpu),
         "--config", f"output_dir={tmp_path / 'results'}"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "subpath_group" in result.stdout and "figure2" in result.stdout


def test_a_later_added_key_at_its_default_changes_no_params_or_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key registered in plan.LATER_DEFAULTS (a new feature) is left out of the stage's values
    at its default, inside a declared section and as a declared key, so an old study's params
    and hashes stay as they were; the job's config gets it back; set to another value it is in
    both. A script handed another stage's params is refused."""
    config = lrconfig.load(TINY, overrides={"output_dir": str(tmp_path)})
    config = lrconfig.for_seed(config, 0)
    before = {r: (r.values(config), r.hash(config)) for r in (plan.MAIN_PATH, plan.SUBPATHS)}
    monkeypatch.setitem(plan.LATER_DEFAULTS, "model.new_width", 1.0)  # in a declared section
    monkeypatch.setitem(plan.LATER_DEFAULTS, "optimizer.subpath_lr", 0.5)  # a declared key
    monkeypatch.setitem(plan.LATER_DEFAULTS, "schedule.new_shape", "step")  # declared by none
    old_lr = config["optimizer"]["subpath_lr"]
    config["model"]["new_width"] = 1.0
    config["schedule"]["new_shape"] = "step"
    for reads, (values, digest) in before.items():
        assert reads.values(config) == values and reads.hash(config) == digest
    config["optimizer"]["subpath_lr"] = 0.5
    assert "optimizer.subpath_lr" not in plan.SUBPATHS.values(config)
    job = plan.SUBPATHS.narrow(config)
    assert job["model"]["new_width"] == 1.0 and job["optimizer"]["subpath_lr"] == 0.5
    assert "new_shape" not in job["schedule"]  # no stage declares it: never put back
    assert "subpath_lr" not in plan.MAIN_PATH.narrow(config)["optimizer"]
    config["model"]["new_width"] = 0.5
    config["optimizer"]["subpath_lr"] = old_lr
    assert plan.MAIN_PATH.values(config)["model"]["new_width"] == 0.5
    assert plan.MAIN_PATH.hash(config) != before[plan.MAIN_PATH][1]
    assert plan.SUBPATHS.values(config)["optimizer.subpath_lr"] == old_lr
    params = {"seed": 0, "reads": plan.SUBPATHS.values(config)}
    with pytest.raises(ConfigError, match="the rule and its script disagree"):
        plan.job_config(params, None, plan.MAIN_PATH)


def test_later_defaults_are_the_schema_defaults() -> None:
    """Each registered later key's value is its schema default (the value old results used)."""
    defaults = lrconfig.validate({})
    for key, value in plan.LATER_DEFAULTS.items():
        section, _, sub = key.partition(".")
        default = defaults[section][sub] if sub else defaults[section]  # main_path_dir: top
        assert plan.canonical(default) == plan.canonical(value), key
