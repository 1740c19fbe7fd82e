"""Config validation: every bad value stops with a message naming the key, before any job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrdecay import config as lrconfig

from .conftest import REPO, TINY, tiny_config

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
        tiny_config(tmp_path, **overrides)


def test_defaults_filled_and_valid(tiny: dict) -> None:
    assert tiny["engine"]["tf32"] is True  # from the schema, not the preset
    assert tiny["pca"]["n_components"] == 5
    assert tiny["metrics"]["train_metric"] == "full_pass"


def test_message_names_value_and_rule(tmp_path: Path) -> None:
    with pytest.raises(lrconfig.ConfigError) as info:
        tiny_config(tmp_path, optimizer={"main_lr": 0})
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


def test_snakemake_stops_before_any_job(tmp_path: Path) -> None:
    result = _snakemake_dry_run(tmp_path, {"optimizer": {"main_lr": 0}})
    assert result.returncode != 0
    assert "optimizer.main_lr = 0: must be > 0" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_plans_valid_config(tmp_path: Path) -> None:
    result = _snakemake_dry_run(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "subpath_group" in result.stdout
