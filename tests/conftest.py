"""What several test modules share: tiny configs and prepared data that every test can make in
seconds, a driver that runs every training job of a config in order, small CIFAR-10 files, and a
copy of this checkout for end-to-end runs. Test modules import helpers from here, never from each
other."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lrdecay.config import validate as lrconfig
from lrdecay.core import io
from lrdecay.training import data, subpaths, train

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "tiny.yaml"


def load_tiny(tmp_path: Path, **overrides: object) -> dict:
    """The tiny preset with its outputs under `tmp_path` and any section overridden, as its first
    seed's jobs see it (lrdecay.config.validate.for_seed: a scalar `seed`)."""
    config = lrconfig.load(TINY, overrides={"output_dir": str(tmp_path / "results"), **overrides})
    return lrconfig.for_seed(config, config["seeds"][0])


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    return load_tiny(tmp_path)


@pytest.fixture
def tiny_data(tiny: dict) -> tuple[dict, Path]:
    """The tiny config and its prepared dataset file."""
    plan = lrconfig.Plan(tiny)
    data.prepare(tiny["data"], tiny["data"]["seed"], plan.data_path)
    return tiny, plan.data_path


@pytest.fixture(autouse=True)
def restore_torch_process_state() -> Iterator[None]:
    """Undo process-wide torch settings a test changed (threads, backend flags, default dtype).

    Jobs set these for their whole process (landscape.evaluate_shard sets one thread); a later
    test that compares numbers with a subprocess would otherwise reduce in another order.
    """
    threads = torch.get_num_threads()
    dtype = torch.get_default_dtype()
    flags = {
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.use_deterministic_algorithms(flags["deterministic"])


# -- the training engine: a tiny config, a fake CIFAR set, every job in order, outputs -----------
ENGINE_BASE = {
    "run_name": "t", "seeds": [0], "device": "cpu",
    "data": {"name": "digits", "train_per_class": 20, "test_per_class": 20},
    "model": {"name": "mlp", "hidden": [32]},
    "loss": "mse",
    "optimizer": {"main_lr": 0.1, "subpath_lr": 0.01, "batch_size": 32, "momentum": 0.9,
                  "weight_decay": 1e-3},
    "schedule": {"main_epochs": 6, "first_branch_epoch": 2, "branch_interval": 2,
                 "last_branch_epoch": 6, "subpath_epochs": 3, "segment_epochs": 3,
                 "subpaths_per_job": 3},
    "trajectory": {"every_epochs": 1},
    "engine": {"checkpoint_seconds": 0},
}


def engine_config(out: Path, **sections: dict) -> dict:
    """A validated tiny config (digits, MLP, momentum and weight decay) writing under `out`."""
    config: dict = {"output_dir": str(out)}
    lrconfig._deep_update(config, ENGINE_BASE)
    lrconfig._deep_update(config, sections)
    config = lrconfig.validate(config)
    return lrconfig.for_seed(config, config["seeds"][0])  # as the first seed's jobs see it


def conv_config(out: Path, **sections: dict) -> dict:
    """vgg_small (dropout 0) with crops and flips on a fake 32x32 CIFAR-shaped set."""
    conv = {"data": {"name": "cifar10", "train_per_class": 4, "test_per_class": 2,
                     "augment": True},
            "model": {"name": "vgg_small", "dropout": 0.0}, "loss": "cross_entropy",
            "optimizer": {"batch_size": 8, "main_lr": 0.05, "subpath_lr": 0.01},
            "schedule": {"main_epochs": 3, "first_branch_epoch": 1, "branch_interval": 1,
                         "last_branch_epoch": 3, "subpath_epochs": 2, "segment_epochs": 2}}
    lrconfig._deep_update(conv, sections)
    return engine_config(out, **conv)


def fake_cifar(path: Path, n_train: int = 16, n_test: int = 8, seed: int = 0) -> None:
    """A prepared dataset file in `data.prepare`'s format with random CIFAR-shaped images."""
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    as_float = train_x.astype(np.float64)
    io.save_checkpoint(path, {
        "train_x": torch.from_numpy(train_x),
        "train_y": torch.from_numpy(np.arange(n_train) % 10),
        "test_x": torch.from_numpy(rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)),
        "test_y": torch.from_numpy(np.arange(n_test) % 10),
        "mean": torch.tensor(as_float.mean(axis=(0, 2, 3)), dtype=torch.float32),
        "std": torch.tensor(as_float.std(axis=(0, 2, 3)), dtype=torch.float32),
        "n_classes": 10,
    })


def prepare_data(config: dict) -> Path:
    """The config's dataset file: digits prepared for real, CIFAR-10 faked (no download)."""
    plan = lrconfig.Plan(config)
    if config["data"]["name"] == "digits":
        data.prepare(config["data"], config["data"]["seed"], plan.data_path)
    else:
        fake_cifar(plan.data_path)
    return plan.data_path


def train_all(config: dict, groups: bool = True, device: str = "cpu") -> None:
    """Every training job of `config` in DAG order, skipping finished ones (as Snakemake does)."""
    plan = lrconfig.Plan(config)
    if not plan.data_path.exists():
        prepare_data(config)
    for end in [0, *plan.segment_ends]:
        if not plan.segment_dir(end).exists():
            train.run_main_segment(config, str(plan.data_path), end, str(plan.segment_dir(end)),
                                   device)
    for group in range(len(plan.subpath_groups)) if groups else ():
        if not plan.group_dir(group).exists():
            subpaths.run_subpath_group(config, str(plan.data_path), group,
                                       str(plan.group_dir(group)), device)


def outputs(config: dict) -> dict[str, bytes | pd.DataFrame]:
    """Every training output of a run: arrays as bytes, metrics as frames."""
    run = lrconfig.Plan(config).seed_dir()  # <run>/seed-<s>/
    found: dict[str, bytes | pd.DataFrame] = {}
    for path in sorted(run.glob("main/segment-*/*")) + sorted(run.glob("subpaths/group-*/*")):
        key = str(path.relative_to(run))
        if path.suffix == ".npy":
            found[key] = np.load(path).tobytes()
        elif path.suffix == ".csv":
            found[key] = pd.read_csv(path)
    return found


def state_bytes(config: dict) -> dict[str, bytes]:
    """The bytes of every checkpoint and checksum record a run's training jobs published
    (state.pt, branch-XXXX.pt and their .json; the arrays' .json): what DVC hashes."""
    run = lrconfig.Plan(config).seed_dir()
    paths = sorted(run.glob("main/segment-*/*")) + sorted(run.glob("subpaths/group-*/*"))
    return {str(path.relative_to(run)): path.read_bytes()
            for path in paths if path.suffix in (".pt", ".json")}


def assert_same_bytes(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert a.keys() == b.keys()
    differ = [key for key in a if a[key] != b[key]]
    assert not differ, f"differ byte for byte from the uninterrupted run: {differ}"


def assert_same_outputs(a: dict, b: dict) -> None:
    """Bit-identical arrays and exactly equal metrics, naming the first file that differs."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key], b[key], check_exact=True, obj=key)
        else:
            assert a[key] == b[key], f"{key} differs"


def poison_branch_state(config: dict, branch: int) -> Path:
    """Rewrite the main-path state at `branch` with NaN weights (a valid, checksummed file)."""
    path = lrconfig.Plan(config).branch_state(branch)
    state = io.load_checkpoint(path, fix="")
    state["model"] = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}
    io.save_checkpoint(path, state)
    return path


def subprocess_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH (a child can import `tests`)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


# -- CIFAR-10 files in both official layouts, at a small size ------------------------------------
# The official checks at the size of the files written here: 20 images per file, five training
# files with 10 images of each class, a test file with 2 of each.
CIFAR_SMALL = data.CifarSpec(train_per_class=10, test_per_class=2)


def _write_batches(
    root: Path, layout: str, n: int, seed: int, write
) -> tuple[np.ndarray, np.ndarray]:
    """Random images in six batch files (five train, one test); `write(path, images, labels)`
    writes one file in the layout's format."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6 * n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(6 * n) % 10
    folder = root / layout
    folder.mkdir(parents=True)
    suffix = ".bin" if layout == data.CIFAR10_BIN else ""
    names = [f"data_batch_{k}{suffix}" for k in range(1, 6)] + [f"test_batch{suffix}"]
    for i, name in enumerate(names):
        part = slice(i * n, (i + 1) * n)
        write(folder / name, images[part].reshape(n, -1), labels[part])
    return images, labels


def write_cifar_bin(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write the official binary layout: per record 1 label byte then 3072 pixel bytes."""

    def write(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
        np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1).tofile(path)

    return _write_batches(root, data.CIFAR10_BIN, n, seed=1, write=write)


def write_cifar_py(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write the official python layout: pickled dicts with b'data' (n, 3072) and b'labels'."""

    def write(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
        with open(path, "wb") as handle:
            # Protocol 2, as the official files (written by Python 2).
            pickle.dump({b"data": pixels, b"labels": labels.tolist()}, handle, protocol=2)

    return _write_batches(root, data.CIFAR10_PY, n, seed=2, write=write)


# -- a copy of this checkout that runs the workflow as a user would ------------------------------
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
# The tiny preset with fewer jobs (each is one Snakemake start under DVC): the initial state and
# one main-path segment holding two branch states, one subpath group, one landscape shard.
FEWER_JOBS = {
    "schedule": {"segment_epochs": 6, "last_branch_epoch": 4, "subpaths_per_job": 5},
    "landscape": {"points": [4, 4], "shards": 1},
}


def checkout_env(repo: Path) -> dict[str, str]:
    """The venv's dvc and snakemake, the copy's own lrdecay, no telemetry or user profile."""
    out = {k: v for k, v in os.environ.items() if k not in ("SNAKEMAKE_PROFILE", "PYTHONPATH")}
    out.update(
        PATH=os.pathsep.join([str(VENV_BIN), out.get("PATH", "")]),
        PYTHONPATH=str(repo),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.org",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.org",
    )
    return out


def sh(cwd: Path, *args: str, timeout: int = 600) -> str:
    """Run a command in `cwd`; its combined output, or a failure that shows it."""
    proc = subprocess.run(args, cwd=cwd, env=checkout_env(cwd), capture_output=True, text=True,
                          timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{output[-6000:]}"
    return output


def working_tree_copy(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of this checkout, as a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def edit_config_yaml(repo: Path, *updates: dict, **sections: object) -> dict:
    """Merge `updates` and `sections` into `repo`'s config.yaml (nested keys as Snakemake merges
    config files: the rest of a section stays); the new config."""
    path = repo / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for update in (*updates, sections):
        lrconfig._deep_update(config, update)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def make_config_yaml_tiny(repo: Path) -> Path:
    """Rewrite `repo`'s config.yaml as the tiny study with fewer jobs (as Snakemake would merge
    config/tiny.yaml over it); the study's run folder."""
    tiny = yaml.safe_load((repo / TINY.relative_to(REPO)).read_text())
    config = edit_config_yaml(repo, tiny, FEWER_JOBS)
    return Path(config["output_dir"]) / config["run_name"]


# -- timeouts that scale with the machine's load ------------------------------------------------
def _timeout_scale() -> float:
    """LRDECAY_TEST_TIMEOUT_SCALE (default 1): every subprocess timeout of the tests is multiplied
    by it, so that a machine shared with other work (README: set 3 there) runs slow, not red."""
    value = os.environ.get("LRDECAY_TEST_TIMEOUT_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = float("nan")
    if not scale > 0 or scale == float("inf"):
        raise pytest.UsageError(f"LRDECAY_TEST_TIMEOUT_SCALE={value!r}: must be a number > 0, "
                                "e.g. 3 on a loaded machine")
    return scale


TIMEOUT_SCALE = _timeout_scale()
_communicate = subprocess.Popen.communicate


def _scaled_communicate(self: subprocess.Popen, input: object = None,
                        timeout: float | None = None) -> tuple:
    """Popen.communicate (under subprocess.run, check_output and conftest.sh) with the timeout
    times TIMEOUT_SCALE; a timeout says which variable gives more time."""
    try:
        return _communicate(self, input, None if timeout is None else timeout * TIMEOUT_SCALE)
    except subprocess.TimeoutExpired as error:
        error.add_note(f"timeout {timeout} s x LRDECAY_TEST_TIMEOUT_SCALE={TIMEOUT_SCALE:g}; on a "
                       "loaded machine rerun with LRDECAY_TEST_TIMEOUT_SCALE=3")
        raise


subprocess.Popen.communicate = _scaled_communicate  # type: ignore[method-assign]


def pytest_report_header() -> str:
    return f"subprocess timeouts x{TIMEOUT_SCALE:g} (LRDECAY_TEST_TIMEOUT_SCALE)"


class Payload:
    """Pickles as a call of `func(*args)`: what a planted CIFAR file would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args
