"""Shared fixtures: tiny configs and prepared data that every test can make in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrdecay import config as lrconfig
from lrdecay import data

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "tiny.yaml"


def tiny_config(tmp_path: Path, **overrides: object) -> dict:
    """The tiny preset with its outputs under `tmp_path` and any section overridden."""
    return lrconfig.load(TINY, overrides={"output_dir": str(tmp_path / "results"), **overrides})


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    return tiny_config(tmp_path)


@pytest.fixture
def tiny_data(tiny: dict) -> tuple[dict, Path]:
    """The tiny config and its prepared dataset file."""
    plan = lrconfig.Plan(tiny)
    data.prepare(tiny["data"], tiny["seed"], plan.data_path)
    return tiny, plan.data_path
