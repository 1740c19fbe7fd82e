"""The whole DAG through the snakemake CLI on the tiny preset, in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdecay import io

from .conftest import REPO, TINY


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(TINY),
               "--config", f"output_dir={workdir / 'results'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir / "results" / "tiny"


def test_every_output_exists_and_is_consistent(tiny_run: Path) -> None:
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    main = metrics[metrics["path"] == "main"]
    assert main["epoch"].tolist() == list(range(0, 7))  # epoch 0 (init) .. 6
    sub = metrics[metrics["path"] == "subpath"]
    assert sorted(sub["branch_epoch"].unique()) == [2, 4, 6]
    assert len(sub) == 3 * 4  # each subpath: branch point + 3 epochs
    assert np.isfinite(metrics[["train_loss", "test_loss"]].to_numpy()).all()
    # a subpath starts exactly at the main path's state: same losses at the branch epoch
    start = sub[sub["epochs_after_decay"] == 0].set_index("branch_epoch")["test_loss"]
    at_branch = main.set_index("epoch")["test_loss"].loc[start.index]
    np.testing.assert_allclose(start.to_numpy(), at_branch.to_numpy(), rtol=1e-6)

    main_traj, meta = io.load_array(tiny_run / "trajectories" / "main.npy", "rerun")
    assert meta["epochs"] == list(range(0, 7)) and main_traj.shape[0] == 7
    coords = pd.read_csv(tiny_run / "pca" / "coordinates.csv")
    assert len(coords) == 7 + 3 * 4
    variance = pd.read_csv(tiny_run / "pca" / "explained_variance.csv")
    assert 0 < variance["cumulative_ratio"].iloc[-1] <= 1 + 1e-9
    grid = pd.read_csv(tiny_run / "landscape" / "grid.csv")
    assert len(grid) == 5 * 4 and np.isfinite(grid["test_loss"]).all()
    timing = pd.read_csv(tiny_run / "decay_timing.csv")
    assert timing["branch_epoch"].tolist() == [2, 4, 6]
    for name in ["fig1a_learning_curves", "fig1b_subpath_train_loss", "fig1c_subpath_test_loss",
                 "fig1d_decay_timing", "fig2a_landscape_train", "fig2b_landscape_test"]:
        for ext in ("png", "pdf"):
            assert (tiny_run / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert not any((tiny_run / ".resume").iterdir())  # finished jobs leave no partial state


def test_second_run_has_nothing_to_do(tiny_run: Path) -> None:
    result = snakemake(tiny_run.parent.parent, "-n", "--cores", "1")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_same_config_gives_same_numbers(tiny_run: Path, tmp_path: Path) -> None:
    """CPU determinism across whole runs (every random choice is seeded from config)."""
    result = snakemake(tmp_path, "--cores", "2", f"{tmp_path}/results/tiny/metrics.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    first = pd.read_csv(tiny_run / "metrics.csv")
    second = pd.read_csv(tmp_path / "results" / "tiny" / "metrics.csv")
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    # checkpoints too, byte for byte (DVC hashes them: a rerun must not look like a change)
    for state in sorted((tiny_run / "main").rglob("*.pt")):
        twin = tmp_path / "results" / "tiny" / state.relative_to(tiny_run)
        assert state.read_bytes() == twin.read_bytes(), state


def test_lint_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
