"""The `lrdecay` command: each stage on explicit files, and `describe`'s plan of a config."""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.decomposition import PCA

from lrdecay import __version__
from lrdecay.core import io
from lrdecay.tooling import cli
from lrdecay.training import models
from tests.conftest import TINY

COMMAND = Path(sys.executable).parent / "lrdecay"  # the console script pyproject.toml declares


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_installed_command_shows_help_for_every_stage() -> None:
    assert COMMAND.exists(), f"{COMMAND} missing: reinstall with pip install -e ."
    done = run("--help")
    assert done.returncode == 0, done.stderr
    for stage in ("describe", "prepare-data", "pca", "landscape", "reference"):
        assert stage in done.stdout


def test_describe_counts_the_tiny_plan_by_hand(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["describe", str(TINY), "--no-measure"]) == 0
    out = capsys.readouterr().out
    # tiny: main 6 epochs; branches at 2, 4, 6, each 3 epochs; MLP 64-32-10.
    assert re.search(r"model-epochs\s+15\b", out), out
    assert f"{64 * 32 + 32 + 32 * 10 + 10:,} parameters" in out
    assert re.search(r"main path\s+6 epochs in 3 jobs", out), out
    assert re.search(r"subpaths\s+3 x 3 epochs in 2 jobs", out), out
    assert re.search(r"landscape\s+20 grid points in 2 jobs", out), out


@pytest.mark.parametrize(("grid", "mains", "model_epochs"), [
    # tiny, two seeds: main path 6 epochs, 3 subpaths of 3 epochs per point
    ({"optimizer.subpath_lr": [0.01, 0.02, 0.05]}, {"main-path": 3}, 6 * 2 + 3 * 9 * 2),
    ({"optimizer.main_lr": [0.1, 0.05], "optimizer.subpath_lr": [0.01, 0.02]},
     {"main-path,main_lr=0.1": 2, "main-path,main_lr=0.05": 2}, 2 * 6 * 2 + 4 * 9 * 2),
])
def test_describe_counts_a_sweeps_shared_main_paths_once(
        tmp_path: Path, capsys: pytest.CaptureFixture, grid: dict, mains: dict[str, int],
        model_epochs: int) -> None:
    """A sweep's plan is what Snakemake runs: each shared main path once, every point's
    subpaths; not the points times one study (3 x 15 x 2 = 90 for the first grid)."""
    swept = tmp_path / "sweep.yaml"
    swept.write_text(yaml.safe_dump({"seeds": [0, 1], "sweep": grid}))
    assert cli.main(["describe", str(TINY), str(swept), "--no-measure"]) == 0
    out = capsys.readouterr().out
    n_points = math.prod(len(values) for values in grid.values())
    assert re.search(rf"sweep\s+{n_points} points \({', '.join(grid)}\), {len(mains)} main "
                     "path", out), out
    for name, n in mains.items():
        assert re.search(rf"^  {re.escape(name)}: 6 epochs x 2 seeds for {n} point", out,
                         re.MULTILINE), out
    assert len(re.findall(r"3 x 3 subpath epochs x 2 seeds, main path main-path", out)) == \
        n_points, out
    assert re.search(rf"sweep in all\s+{model_epochs:,} model-epochs", out), out


def test_describe_measures_and_projects(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["describe", str(TINY), "--set", "schedule.main_epochs=12"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"model-epochs\s+21\b", out), out  # the override reached the plan
    per_epoch = float(re.search(r"measured\s+([\d.]+) ms per model-epoch on cpu", out).group(1))
    hours = float(re.search(r"projected\s+training ([\d.]+) h", out).group(1))
    assert per_epoch > 0
    assert hours == pytest.approx(21 * per_epoch / 1e3 / 3600, abs=0.006)


def test_bad_config_value_is_reported_not_raised(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["describe", str(TINY), "--no-measure", "--set", "optimizer.main_lr=0"]) == 2
    assert "optimizer.main_lr" in capsys.readouterr().err


def test_pca_on_plain_npy_files_matches_scikit_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    main = np.cumsum(rng.normal(size=(30, 40)), axis=0).astype(np.float32)
    branch = (main[10] + np.cumsum(rng.normal(size=(12, 40)), axis=0)).astype(np.float32)
    np.save(tmp_path / "main.npy", main)
    np.save(tmp_path / "branch.npy", branch)
    done = run("pca", str(tmp_path / "main.npy"), str(tmp_path / "branch.npy"),
               "--components", "3", "--out", str(tmp_path / "pca"))
    assert done.returncode == 0, done.stderr
    assert "no checksum record" in done.stderr
    expected = PCA(n_components=3).fit(np.concatenate([main, branch]).astype(np.float64))
    variance = pd.read_csv(tmp_path / "pca" / "explained_variance.csv")
    np.testing.assert_allclose(variance["explained_variance_ratio"],
                               expected.explained_variance_ratio_, rtol=1e-9)
    coords = pd.read_csv(tmp_path / "pca" / "coordinates.csv")
    assert (coords["path"] == "main").sum() == 30 and (coords["path"] == "subpath").sum() == 12
    assert coords.loc[coords.path == "main", "epoch"].tolist() == list(range(30))


def test_pca_refuses_trajectories_of_two_architectures(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 5), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 6), dtype=np.float32))
    done = run("pca", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(tmp_path))
    assert done.returncode != 0 and "different parameter counts [5, 6]" in done.stderr


def test_landscape_at_the_basis_mean_is_the_model_loss(tmp_path: Path) -> None:
    """prepare-data then landscape on a hand-made basis; the centre point equals a direct MSE."""
    data_file = tmp_path / "dataset.pt"
    assert run("prepare-data", str(TINY), "--out", str(data_file)).returncode == 0
    torch.manual_seed(5)
    model = models.build({"name": "mlp", "hidden": [32], "dropout": 0.0}, (64,), 10)
    mean = torch.nn.utils.parameters_to_vector(model.parameters()).detach().double().numpy()
    directions = np.zeros((2, mean.size))
    directions[0, 0] = directions[1, 1] = 1.0
    io.save_array(tmp_path / "basis.npy", np.vstack([mean, directions]), {"layout": "test"})
    pd.DataFrame({"pc1": [-1.0, 1.0], "pc2": [-1.0, 1.0]}).to_csv(tmp_path / "c.csv", index=False)
    done = run("landscape", str(TINY), "--set", "landscape.range=explicit",
               "--set", "landscape.pc1=[-2.0, 2.0]", "--set", "landscape.pc2=[-2.0, 2.0]",
               "--set", "landscape.points=[3, 3]", "--data", str(data_file),
               "--basis", str(tmp_path / "basis.npy"), "--coordinates", str(tmp_path / "c.csv"),
               "--out", str(tmp_path / "grid.csv"))
    assert done.returncode == 0, done.stderr
    grid = pd.read_csv(tmp_path / "grid.csv")
    assert len(grid) == 9
    centre = grid[(grid.pc1 == 0) & (grid.pc2 == 0)].iloc[0]
    blob = torch.load(data_file, weights_only=True)
    for split in ("train", "test"):
        x = (blob[f"{split}_x"].float() - blob["mean"]) / blob["std"]
        logits = model(x).double()
        target = torch.nn.functional.one_hot(blob[f"{split}_y"], 10).double()
        loss = 0.5 * (logits - target).pow(2).sum(1).mean().item()
        assert centre[f"{split}_loss"] == pytest.approx(loss, rel=1e-5)
    corner = grid[(grid.pc1 == 2) & (grid.pc2 == 2)].iloc[0]
    assert corner["train_loss"] != pytest.approx(centre["train_loss"], rel=1e-6)


def test_version_names_the_package(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"lrdecay {__version__}"


# Every CLI option that sets a config key -> that key: its default, type and choices come from
# the schema (cli.schema_option), never restated by hand.
CLI_CONFIG_KEYS = {
    ("pca", "components"): "pca.n_components",
    ("pca", "method"): "pca.method",
    ("pca", "chunk_rows"): "pca.chunk_rows",
}


def _options() -> dict[tuple[str, str], argparse.Action]:
    """(subcommand, option dest) -> the argparse action of every option of every subcommand."""
    subparsers = next(a for a in cli.parser()._actions  # noqa: SLF001
                      if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return {(name, action.dest): action for name, sub in subparsers.choices.items()
            for action in sub._actions if action.option_strings}  # noqa: SLF001


def test_cli_defaults_are_the_schema_defaults() -> None:
    """`lrdecay pca --chunk-rows` once defaulted to 1024 while the schema said 512: each option
    that sets a config key has the schema's default (and its choices), and no other option has
    a default beyond "not given" or a flag's, so a new option restating one is caught."""
    from lrdecay.config import validate as lrconfig

    schema = lrconfig.load_schema()["properties"]
    options = _options()
    for (command, dest), key in CLI_CONFIG_KEYS.items():
        section, name = key.split(".")
        spec, action = schema[section]["properties"][name], options[(command, dest)]
        assert action.default == spec["default"], (command, dest, action.default, key)
        assert action.choices == spec.get("enum"), (command, dest)
        assert action.type(str(spec["default"])) == spec["default"], (command, dest)
    set_by_hand = {where for where, action in options.items()
                   if not (action.default is None or isinstance(action.default, bool)
                           or action.default in ([], argparse.SUPPRESS))
                   and where not in CLI_CONFIG_KEYS}
    assert not set_by_hand, f"options with a default of their own: {set_by_hand}"
