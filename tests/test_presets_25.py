"""Issue 25's presets: each plans under Snakemake (a dry run over config/authors.yaml) and its
comment states the size `lrdecay describe` reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lrdecay.config import validate as lrconfig
from lrdecay.tooling.cli import study_size
from tests.conftest import REPO


@pytest.mark.parametrize(("preset", "extra_output", "dataset"), [
    ("authors-label-noise", "data/flipped.npy", "cifar10"),
    ("authors-cifar100", None, "cifar100"),
    ("authors-resnet18", None, "cifar10"),
])
def test_preset_plans_and_states_its_size(tmp_path: Path, preset: str, extra_output: str | None,
                                          dataset: str) -> None:
    files = [REPO / "config" / "authors.yaml", REPO / "config" / f"{preset}.yaml"]
    config = lrconfig.load(*files)
    assert config["data"]["name"] == dataset
    size = study_size(config)
    comment = files[1].read_text()
    assert f"{size['model_epochs']:,} model-epochs" in comment
    assert f"{size['n_params']:,} parameters" in comment
    assert f"{size['snapshot_bytes'] / 1e9:.2f} GB" in comment
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
         "--directory", str(tmp_path), "--configfile", *map(str, files),
         "--config", f"output_dir={tmp_path / 'results'}"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    prepare_rule = r"rule prepare_data:\n(?:\s+input: [^\n]*\n)?\s+output: ([^\n]*)"
    prepare = re.search(prepare_rule, out).group(1)
    run_dir = f"{tmp_path}/results/{preset}/"
    if extra_output:
        assert f"{run_dir}{extra_output}" in prepare
    else:
        assert "flipped" not in prepare
