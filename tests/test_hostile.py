"""Hostile inputs and faults: each bad value or file stops before any job, naming the problem;
one run owns an output folder, and one process a training job.

The tables are the specification: one row per input with the fragment its message must contain.
Config rows go through lrdecay.config.validate.load (fast); CLI rows through `snakemake -n`, the way
a user meets them, and must stop before any job.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdecay.config import validate as lrconfig
from lrdecay.core import io, lock
from lrdecay.training import data

from .conftest import (
    CIFAR_SMALL,
    REPO,
    TINY,
    load_tiny,
    train_all,
    working_tree_copy,
    write_cifar_bin,
    write_cifar_py,
)

# A 'billion laughs': nine levels of aliases, each repeating the one below ten times.
BOMB = "{key}: &l9 [" + ", ".join(["&l8 [" + ", ".join(
    ["&l7 [" + ", ".join(["&l6 [" + ", ".join(["&l5 [" + ", ".join(["&l4 [" + ", ".join(
        ["&l3 [" + ", ".join(["&l2 [" + ", ".join(["&l1 [" + ", ".join(["1"] * 10) + "]"]
                                                   + ["*l1"] * 9) + "]"] + ["*l2"] * 9) + "]"]
         + ["*l3"] * 9) + "]"] + ["*l4"] * 9) + "]"] + ["*l5"] * 9) + "]"] + ["*l6"] * 9) + "]"]
    + ["*l7"] * 9) + "]"] + ["*l8"] * 9) + "]"
# (id, YAML over config/tiny.yaml as a second config file (None: the file is missing), fragment)
CONFIG_ROWS = [
    ("main_lr nan", "optimizer: {main_lr: .nan}",
     "config key optimizer.main_lr = nan: must be a finite number"),
    ("main_lr inf", "optimizer: {main_lr: .inf}",
     "config key optimizer.main_lr = inf: must be a finite number"),
    ("momentum nan", "optimizer: {momentum: .nan}",
     "config key optimizer.momentum = nan: must be a finite number"),
    ("weight_decay inf", "optimizer: {weight_decay: .inf}",
     "config key optimizer.weight_decay = inf: must be a finite number"),
    ("margin nan", "landscape: {margin: .nan}",
     "config key landscape.margin = nan: must be a finite number"),
    ("pc1 -inf", "landscape: {range: explicit, pc1: [-.inf, 1.0]}",
     "config key landscape.pc1.0 = -inf: must be a finite number"),
    ("seed 1e23", "seeds: [1.0e+23]",
     "config key seeds.0 = 99999999999999991611392: must be <= 4294967295"),
    ("seed repeated", "seeds: [1, 1]", "config key seeds = [1, 1]: must not list a value twice"),
    ("old seed key", "seed: 3", "config key seed = 3: replaced by seeds, a list of training "
     "seeds (the study runs once per seed); use seeds: [3]"),
    ("grid beyond memory", "landscape: {points: [100000, 100000]}",
     "config key landscape.points = [100000, 100000]: evaluating 10,000,000,000 grid points"),
    ("main_epochs 10000", "schedule: {main_epochs: 10000}",
     "config key schedule.main_epochs = 10000: must be <= 9999"),
    ("main_epochs 1e12", "schedule: {main_epochs: 1.0e+12}",
     "config key schedule.main_epochs = 1000000000000: must be <= 9999"),
    ("main_epochs fraction", "schedule: {main_epochs: 6.5}",
     "config key schedule.main_epochs = 6.5: must be of type integer"),
    ("subpath_epochs 1e12", "schedule: {subpath_epochs: 1.0e+12}",
     "config key schedule.subpath_epochs = 1000000000000: must be <= 9999"),
    ("one branch epoch", "schedule: {first_branch_epoch: 4, last_branch_epoch: 4}",
     "schedule.branch_interval = 2: give 1 branch epoch [4]; Figure 1"),
    ("more subpath jobs than names",
     "schedule: {main_epochs: 2000, first_branch_epoch: 1, last_branch_epoch: 2000, "
     "branch_interval: 1, subpaths_per_job: 1}",
     "config key schedule.subpaths_per_job = 1: 2000 branch epochs make 2000 subpath jobs"),
    ("shards beyond names", "landscape: {shards: 1001}",
     "config key landscape.shards = 1001: must be <= 1000"),
    ("run_name ..", "run_name: '..'", "config key run_name = '..': must be one folder name"),
    ("run_name .", "run_name: '.'", "config key run_name = '.': must be one folder name"),
    ("run_name slash", "run_name: a/b", "config key run_name = 'a/b': must be one folder name"),
    ("run_name 300 chars", "run_name: " + "r" * 300,
     "config key run_name = 'rrrr"),
    ("run_name 300 chars, cut", "run_name: " + "r" * 300,
     "rrr... (302 characters): must be one folder name"),
    ("run_name newline", 'run_name: "x\\n"', "config key run_name = 'x\\n': must be one folder"),
    ("unknown toy key", "toy: {gamas: [1.0]}",
     "config key toy.gamas: unknown key (the allowed keys are seed, gammas"),
    ("toy key in the schema named", "toy: {gamas: [1.0]}", "see "
                                                           "lrdecay/config/schemas/toy.schema.yaml"),
    ("unknown key", "optimiser: {main_lr: 0.1}",
     "config key optimiser: unknown key (the allowed keys are run_name"),
    ("duplicate key", "seed: 1\nseed: 2",
     "key 'seed' appears twice in one section (lines 1 and 2)"),
    ("duplicate nested key", "optimizer:\n  main_lr: 0.1\n  main_lr: 0.2",
     "key 'main_lr' appears twice"),
    ("output_dir is a file", "output_dir: {tmp}/a-file",
     "a-file is a file, but outputs go into the folder"),
    ("output_dir under a file", "output_dir: {tmp}/a-file/results", "a-file is a file"),
    ("not YAML", "optimizer: [unclosed", "is not valid YAML"),
    ("not a mapping", "- 1\n- 2", "must hold a mapping of keys, not list"),
    ("missing file", None, "missing.yaml does not exist"),
    ("alias bomb in seeds", BOMB.format(key="seeds"),
     "bomb.yaml holds 1,111,111,113 values once its YAML aliases (*name) are expanded, more "
     "than the 10,000 a config may hold"),
    ("alias bomb in model.hidden", "model:\n  " + BOMB.format(key="hidden").replace("\n", "\n  "),
     "values once its YAML aliases (*name) are expanded"),
    ("alias of itself", "seeds: &s [1, *s]", "refers to a value that contains it"),
    ("nested too deeply", "seeds: " + "[" * 5000 + "]" * 5000, "nests its values too deeply"),
    ("5000 seeds", f"seeds: {list(range(5000))}",
     "config key seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"),
    ("5000 seeds bounded", f"seeds: {list(range(5000))}",
     "... (28,890 characters): takes at most 100 items"),
    ("101 hidden layers", f"model: {{hidden: {[8] * 101}}}",
     "config key model.hidden = [8, 8, 8"),
    ("toy gammas repeated", "toy: {gammas: [1.0, 1.0]}",
     "config key toy.gammas = [1.0, 1.0]: must not list a value twice"),
    ("toy sigma huge", "toy: {sigma: 1.0e+6}",
     "config key toy.sigma = 1e+06: label-noise SGD diverges for gamma = 2.0"),
    ("toy sigma huge, the limit", "toy: {sigma: 1.0e+6}", "use toy.sigma < "),
    ("hidden 1e8", "model: {hidden: [100000000]}",
     "config key model.hidden = [100000000]: the model has 7,500,000,010 parameters"),
    ("1 MB data.name", "data: {name: " + "x" * 1_000_000 + "}",
     "xxx... (1,000,002 characters): must be one of ['digits', 'cifar10', 'cifar100']"),
    ("output_dir a link loop", "output_dir: {tmp}/loop/results",
     "loop is a symbolic link loop (to {tmp}/loop, which leads back to itself). Fix: delete"),
    ("data.root a link loop", "data: {root: {tmp}/loop}",
     "config key data.root = '{tmp}/loop': {tmp}/loop is a symbolic link loop"),
    ("output_dir a link to nothing", "output_dir: {tmp}/dangling/results",
     "dangling is a symbolic link to {tmp}/nowhere, which does not exist"),
    ("YTE template", "__use_yte__: true\nrun_name: ?'tiny'",
     "missing.yaml sets __use_yte__: it is a YTE template, whose ?-expressions are Python code"),
    ("YTE template switched off", "__use_yte__: false", "sets __use_yte__"),
]


@pytest.mark.parametrize(("text", "fragment"), [row[1:] for row in CONFIG_ROWS],
                         ids=[row[0] for row in CONFIG_ROWS])
def test_bad_config_is_named(tmp_path: Path, text: str | None, fragment: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    base = tmp_path / "base.yaml"
    base.write_text(f"output_dir: {tmp_path}/results\n")
    bad = tmp_path / ("bomb.yaml" if "&l9" in (text or "") else "missing.yaml")
    if text is not None:
        bad.write_text(text.replace("{tmp}", str(tmp_path)) + "\n")
    with pytest.raises(lrconfig.ConfigError) as info:
        lrconfig.load(TINY, base, bad)
    assert fragment.replace("{tmp}", str(tmp_path)) in str(info.value)
    assert len(str(info.value)) < 5000  # no value comes back whole


def _pickled(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


_RNG = np.random.default_rng(0)
_PIXELS = _RNG.integers(0, 256, (20, 3072), dtype=np.uint8)
# (id, layout, content of data_batch_2 in place of a valid 20-image file, message fragment)
DATA_FILE_ROWS = [
    ("random bytes", data.CIFAR10_BIN, _RNG.integers(0, 256, 20 * 3073, np.uint8).tobytes(),
     "data_batch_2.bin has labels"),
    ("cut inside a record", data.CIFAR10_BIN, bytes(20 * 3073 - 100), "is truncated"),
    ("cut to whole records", data.CIFAR10_BIN, bytes(10 * 3073),
     "data_batch_2.bin holds 10 images; this official CIFAR-10 file holds exactly 20"),
    ("empty binary", data.CIFAR10_BIN, b"", "data_batch_2.bin has 0 bytes"),
    ("empty python", data.CIFAR10_PY, b"", "data_batch_2 is not a CIFAR-10 python batch"),
    ("python list", data.CIFAR10_PY, _pickled([1, 2]), "is not a CIFAR-10 python batch"),
    ("python float pixels", data.CIFAR10_PY,
     _pickled({b"data": _PIXELS.astype(np.float64), b"labels": [0] * 20}),
     "b'data' is ndarray, not a uint8 array"),
    ("python labels missing", data.CIFAR10_PY, _pickled({b"data": _PIXELS}), "b'labels'"),
    ("python label count", data.CIFAR10_PY,
     _pickled({b"data": _PIXELS, b"labels": list(range(10)) + list(range(9))}),
     "data_batch_2 has 20 images but 19 labels"),
    ("python code", data.CIFAR10_PY, b"cos\nsystem\n(S'true'\ntR.",
     "refers to os.system, which a CIFAR batch never does; refusing"),
    ("python labels 10..", data.CIFAR10_PY,
     _pickled({b"data": _PIXELS, b"labels": list(range(10, 30))}), "has labels [10, 11, 12"),
]


@pytest.mark.parametrize(("layout", "content", "fragment"), [row[1:] for row in DATA_FILE_ROWS],
                         ids=[row[0] for row in DATA_FILE_ROWS])
def test_bad_data_file_is_named(tmp_path: Path, layout: str, content: bytes,
                                fragment: str) -> None:
    (write_cifar_bin if layout == data.CIFAR10_BIN else write_cifar_py)(tmp_path)
    suffix = ".bin" if layout == data.CIFAR10_BIN else ""
    (tmp_path / layout / f"data_batch_2{suffix}").write_bytes(content)
    with pytest.raises(data.DataError) as info:
        data.load_cifar10(tmp_path, spec=CIFAR_SMALL)
    assert fragment in str(info.value)


# (id, snakemake arguments after the tiny preset ({tmp}: the test's folder), fragment)
CLI_ROWS = [
    ("nested nan", ["--config", "optimizer={main_lr: .nan}"],
     "config key optimizer.main_lr = nan: must be a finite number"),
    ("nested 1e12", ["--config", "schedule={main_epochs: 1e12}"],
     "config key schedule.main_epochs = 1000000000000: must be <= 9999"),
    ("run_name ..", ["--config", "run_name=.."], "config key run_name = '..': must be one folder"),
    ("output_dir is a file", ["--config", "output_dir={tmp}/a-file"], "a-file is a file"),
    ("unknown toy key", ["--config", "toy={gamas: [1.0]}"], "config key toy.gamas: unknown key"),
    ("duplicate key in --configfile", ["--configfile", str(TINY), "{tmp}/dup.yaml"],
     "dup.yaml: key 'seed' appears twice"),
    ("alias bomb in --configfile", ["--configfile", str(TINY), "{tmp}/bomb.yaml"],
     "bomb.yaml holds 1,111,111,113 values once its YAML aliases (*name) are expanded"),
    ("5000 seeds", ["--config", f"seeds={list(range(5000))}"], "takes at most 100 items"),
    # Snakemake has run the template's code by then (README says so); lrdecay still refuses it
    ("YTE template as --configfile", ["--configfile", str(TINY), "{tmp}/yte.yaml"],
     "yte.yaml sets __use_yte__: it is a YTE template"),
]


def snakemake(tmp_path: Path, *args: str, dry: bool = True,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """Run Snakemake on this checkout from `tmp_path`/work (its own working folder)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
         *(["-n"] if dry else []), *args],
        cwd=work, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize(("args", "fragment"), [row[1:] for row in CLI_ROWS],
                         ids=[row[0] for row in CLI_ROWS])
def test_bad_cli_input_stops_before_any_job(tmp_path: Path, args: list[str],
                                            fragment: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "dup.yaml").write_text(f"output_dir: {tmp_path}/results\nseed: 1\nseed: 2\n")
    (tmp_path / "bomb.yaml").write_text(BOMB.format(key="seeds") + "\n")
    (tmp_path / "yte.yaml").write_text(f"__use_yte__: true\noutput_dir: ?'{tmp_path}/results'\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "--config":  # the preset, outputs in the test's folder, then the row's values
        args = ["--configfile", str(TINY), "--config", f"output_dir={tmp_path}/results", *args[1:]]
    result = snakemake(tmp_path, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert fragment in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert not (tmp_path / "results").exists()


def test_missing_configfile_is_named(tmp_path: Path) -> None:
    """Snakemake reads --configfile before the Snakefile runs, so the message is its own; it
    still names the file (an upstream traceback that lrdecay cannot shorten)."""
    result = snakemake(tmp_path, "--configfile", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"No such file or directory: '{tmp_path / 'nope.yaml'}'" in output


def _holder(tmp_path: Path, code: str) -> subprocess.Popen:
    """A separate process (own working folder) that runs `code` with the lock, prints 'held' and
    waits to be killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time\nfrom lrdecay.core import lock\n{code}\n"
         "print('held', flush=True)\ntime.sleep(600)"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _job_holder(tmp_path: Path, run_dir: Path, name: str) -> subprocess.Popen:
    return _holder(tmp_path, f"held = lock.job({str(run_dir)!r}, {name!r})\nheld.__enter__()")


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)  # as hard as a kill -9: the kernel drops the flock
    process.wait()


def test_second_writer_of_an_output_folder_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "results" / "tiny"
    holder = _holder(tmp_path, f"handle = lock.hold_run({str(run_dir)!r})")
    try:
        with pytest.raises(lock.LockHeld) as info:
            lock.hold_run(run_dir)
        message = str(info.value)
        assert f"output folder {run_dir} is in use by pid {holder.pid}" in message
        assert "another run_name or output_dir" in message
    finally:
        _kill(holder)
    lock.hold_run(run_dir).close()  # free again once the holder is gone, however it died


def test_snakemake_refuses_an_output_folder_in_use(tmp_path: Path) -> None:
    """Two runs from different working folders share output_dir: the second stops before any
    job, naming the first; after the first is killed, the same command runs."""
    run_dir = tmp_path / "results" / "tiny"
    dataset = run_dir / "data" / "dataset.pt"
    args = [str(dataset), "--configfile", str(TINY), "--config", f"output_dir={run_dir.parent}"]
    holder = _holder(tmp_path, f"handle = lock.hold_run({str(run_dir)!r})")
    try:
        result = snakemake(tmp_path, *args, dry=False)
    finally:
        _kill(holder)
    assert result.returncode != 0
    assert f"output folder {run_dir} is in use by pid {holder.pid}" in result.stdout + result.stderr
    assert not dataset.exists()
    again = snakemake(tmp_path, *args, dry=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert dataset.exists()


def test_live_job_owner_is_named(tmp_path: Path) -> None:
    """A training job left running (Snakemake was killed) holds its job lock: a second copy is
    refused with its pid, and takes over once that process is gone."""
    run_dir = tmp_path / "results" / "tiny"
    holder = _job_holder(tmp_path, run_dir, "main_segment-0003")
    try:
        with pytest.raises(lock.LockHeld) as info, lock.job(run_dir, "main_segment-0003"):
            pass
        message = str(info.value)
        assert f"job main_segment-0003 is in use by pid {holder.pid}" in message
        assert f"kill {holder.pid}" in message
        with lock.job(run_dir, "main_segment-0006"):  # other jobs are free
            pass
    finally:
        _kill(holder)
    with lock.job(run_dir, "main_segment-0003"):
        pass


def test_training_job_refuses_a_live_copy(tmp_path: Path) -> None:
    """Through the job entry script: the rerun's main_segment job stops, naming the orphan."""
    run_dir = tmp_path / "results" / "tiny"
    holder = _job_holder(tmp_path, run_dir, "main_segment-seed-0-0000")
    try:
        result = snakemake(tmp_path, str(run_dir / "seed-0" / "main" / "segment-0000"),
                           "--configfile", str(TINY), "--config", f"output_dir={run_dir.parent}",
                           dry=False)
    finally:
        _kill(holder)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"job main_segment-seed-0-0000 is in use by pid {holder.pid}" in output
    assert not (run_dir / "seed-0" / "main" / "segment-0000").exists()


# -- symbolic links planted in work folders (a shared file system: others can write there) ------
# (id, the link, relative to the seed folder ({hash}: the main path's training hash,
# {subpath_hash}: the subpaths'; '../': the run folder),
# whether it points at a victim folder rather than a file)
LINK_ROWS = [
    ("resume snapshots of a main segment", ".resume/main_segment-0003/{hash}/snapshots.npy", False),
    ("resume snapshots of a subpath",
     ".resume/subpath_group-000/{subpath_hash}/branch-0002/snapshots.npy", False),
    ("resume state", ".resume/main_segment-0003/{hash}/resume.pt", False),
    ("resume folder of a job", ".resume/main_segment-0006", True),
    ("resume folder of a config", ".resume/main_segment-0003/{hash}", True),
    ("the resume root", ".resume", True),
    ("a branch state in the resume folder", ".resume/main_segment-0003/{hash}/branch-0002.pt",
     False),
    ("folder of the published segments", "main", True),
    ("run lock", "../.lock", False),
    ("job lock", "../.locks/main_segment-seed-0-0003.lock", False),
]


def _plant(tmp_path: Path, run_seed: Path, relative: str, folder: bool) -> tuple[Path, Path]:
    """A victim outside the run (a file, or a folder holding files named as lrdecay's) and a
    link to it at `relative`; (link, victim)."""
    victim = tmp_path / "victim"
    if folder:
        victim.mkdir()
        for name in ("snapshots.npy", "resume.pt", "state.pt", "metrics.csv", "segment-0003"):
            (victim / name).write_bytes(b"precious " + name.encode())
    else:
        victim.write_bytes(b"precious bytes that lrdecay must never touch\n")
    link = Path(os.path.normpath(run_seed / relative))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim, target_is_directory=folder)
    return link, victim


def _snapshot(victim: Path) -> dict[str, bytes]:
    files = [victim] if victim.is_file() else sorted(p for p in victim.rglob("*"))
    return {str(p): p.read_bytes() if p.is_file() else b"<folder>" for p in files}


@pytest.mark.parametrize(("relative", "folder"), [row[1:] for row in LINK_ROWS],
                         ids=[row[0] for row in LINK_ROWS])
def test_a_planted_link_is_refused_and_its_target_untouched(tmp_path: Path, relative: str,
                                                            folder: bool) -> None:
    config = load_tiny(tmp_path)
    seed_dir = lrconfig.Plan(config).seed_dir()
    link, victim = _plant(tmp_path, seed_dir,
                          relative.replace("{hash}", lrconfig.MAIN_PATH.hash(config))
                          .replace("{subpath_hash}", lrconfig.SUBPATHS.hash(config)), folder)
    before = _snapshot(victim)
    with pytest.raises(io.UnsafePathError) as info:
        if relative.startswith("../"):  # the locks: taken by Snakemake and by each training job
            with lock.job(seed_dir.parent, "main_segment-seed-0-0003"):
                lock.hold_run(seed_dir.parent).close()
        else:
            train_all(config)
    message = str(info.value)
    assert f"{link} is a symbolic link" in message, message
    assert f"Fix: delete the link (rm {link})" in message
    assert _snapshot(victim) == before  # not a byte written through the link
    assert not list(tmp_path.glob("victim/.*"))  # nor a temporary file beside its target


def test_no_work_file_is_opened_beside_the_guard() -> None:
    """The openers that follow links (numpy's memmap, hard links) are called in lrdecay.core.io
    only, behind its guard."""
    for path in (REPO / "lrdecay").rglob("*.py"):
        if path.name == "io.py":
            continue
        text = path.read_text()
        for call in ("open_memmap(", "hardlink_to(", "os.link("):
            used = call in text.replace("io.open_memmap(", "")
            assert not used, (f"{path.relative_to(REPO)} calls {call} outside lrdecay.core.io's "
                              f"guard")


def test_snakemake_refuses_a_run_folder_holding_a_link(tmp_path: Path) -> None:
    """Before any job, even a dry run: a link anywhere inside the run folder is named."""
    run_dir = tmp_path / "results" / "tiny"
    link, victim = _plant(tmp_path, run_dir / "seed-0", "pca", folder=True)
    before = _snapshot(victim)
    result = snakemake(tmp_path, "--configfile", str(TINY), "--config",
                       f"output_dir={run_dir.parent}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{link} is a symbolic link (to {victim})" in output, output[-2000:]
    assert "Traceback" not in output
    assert _snapshot(victim) == before


YTE_CODE = ("__use_yte__: true\n"
            "run_name: ?__import__('pathlib').Path('{marker}').touch() or 'tiny'\n")
# (id, how the template reaches lrdecay first: a command in {repo} (a copy of this checkout
# whose config.yaml is the template), fragment)
YTE_ROWS = [
    ("config.yaml of a snakemake run", ["-m", "snakemake", "-n", "--cores", "1"],
     "config.yaml sets __use_yte__"),
    ("the DVC pipeline's check stage", ["-m", "lrdecay.tooling.dvcgen", "--check"],
     "config.yaml sets __use_yte__: it is a YTE template"),
    ("an lrdecay command", ["-m", "lrdecay.tooling.cli", "describe", "--no-measure", "config.yaml"],
     "lrdecay describe: config file config.yaml sets __use_yte__"),
]


@pytest.mark.parametrize(("command", "fragment"), [row[1:] for row in YTE_ROWS],
                         ids=[row[0] for row in YTE_ROWS])
def test_a_yte_config_file_runs_no_code(tmp_path: Path, command: list[str],
                                        fragment: str) -> None:
    """Where lrdecay reads a config file before Snakemake does, a YTE template is refused
    before its code can run (a --configfile is loaded by Snakemake first: the CLI row above)."""
    repo = tmp_path / "repo"
    working_tree_copy(repo)
    marker = tmp_path / "MARKER"
    (repo / "config.yaml").write_text(YTE_CODE.format(marker=marker))
    result = subprocess.run([sys.executable, *command], cwd=repo, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert fragment in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert not marker.exists(), "the template's code ran"


# -- degenerate PCA: stops naming the cause and the fix, writes nothing (never a NaN ratio) ------
_LINE = np.outer(np.arange(12.0), np.linspace(-1, 1, 30))
# (id, the snapshots of one trajectory, components, method, fragment)
PCA_ROWS = [
    ("one snapshot", np.ones((1, 30)), 5, "exact", "fewer snapshots than components"),
    ("as many snapshots as components", _RNG.normal(size=(5, 30)), 5, "exact",
     "5 snapshots span at most 4 direction(s) once centred, fewer snapshots than components"),
    ("identical snapshots", np.ones((12, 30)), 5, "exact",
     "all of them are identical, so there is no variance to explain"),
    ("identical snapshots, incremental", np.ones((12, 30)), 5, "incremental",
     "all of them are identical, so there is no variance to explain"),
    ("snapshots on a line", _LINE, 5, "exact", "they vary along only 1 direction(s)"),
]


@pytest.mark.parametrize(("rows", "components", "method", "fragment"),
                         [row[1:] for row in PCA_ROWS], ids=[row[0] for row in PCA_ROWS])
def test_degenerate_pca_stops_in_the_command_and_the_job(tmp_path: Path, capsys,
                                                          rows: np.ndarray, components: int,
                                                          method: str, fragment: str) -> None:
    from lrdecay.analysis import pca
    from lrdecay.tooling import cli

    plain = tmp_path / "main.npy"
    np.save(plain, rows.astype(np.float32))
    code = cli.main(["pca", str(plain), "--components", str(components), "--method", method,
                     "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"lrdecay pca: PCA of {len(rows)} snapshot" in err and fragment in err, err
    assert "Fix:" in err and "Traceback" not in err and "explain nan" not in err
    assert not (tmp_path / "cli").exists()

    # the pipeline's pca job (workflow/scripts/pca.py) calls pca.run on checksummed files
    recorded = tmp_path / "job" / "main.npy"
    io.save_array(recorded, rows.astype(np.float32),
                  {"epochs": list(range(len(rows))), "branch_epoch": None})
    out = tmp_path / "job" / "pca"
    with pytest.raises(pca.DegeneratePCAError, match="Fix:") as info:
        pca.run([recorded], {"n_components": components, "method": method, "chunk_rows": 512},
                out / "explained_variance.csv", out / "coordinates.csv", out / "basis.npy", "h")
    assert fragment in str(info.value)
    assert not out.exists()


def test_a_diverging_toy_simulation_names_sigma() -> None:
    """Past the config-time bound (a noisy start can still diverge): the runtime guard names
    the label noise and the step size, and their product."""
    from lrdecay.toy import simulate

    with pytest.raises(simulate.StepSizeTooLargeError) as info:
        simulate._guard(np.array([np.inf]), 0.005, "toy.eta_large", 12, 2000.0)
    assert ("config keys toy.eta_large = 0.005 and toy.sigma = 2000: label-noise SGD diverged "
            "at step 12") in str(info.value)
    assert "toy.eta_large * toy.sigma = 10" in str(info.value)


def test_device_cuda_without_a_gpu_stops_a_local_run_before_any_job(tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "0")  # this machine: no GPU (as nvidia-smi says)
    run_dir = tmp_path / "results" / "tiny"
    result = snakemake(tmp_path, "--configfile", str(TINY), "--config",
                       f"output_dir={run_dir.parent}", "device=cuda", dry=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key device = cuda, but this machine has no GPU" in output, output[-2000:]
    assert "On a SLURM submit host without a GPU this config is fine" in output
    assert "Traceback" not in output
    assert not (run_dir / "data" / "dataset.pt").exists()  # no job ran


# -- lrdecay commands: one message with the fix, never a traceback ------------------------------
# (id, arguments ({tmp}: the test's folder), fragment of the one error message)
COMMAND_ROWS = [
    ("pca of a file that is not .npy", ["pca", "{tmp}/text.npy", "--out", "{tmp}/pca"],
     "text.npy is not a .npy array"),
    ("pca of a missing file", ["pca", "{tmp}/missing.npy", "--out", "{tmp}/pca"],
     "missing.npy: No such file or directory. Fix: check the path"),
    ("pca into a link loop", ["pca", "{tmp}/main.npy", "--out", "{tmp}/loop/pca"],
     "Fix: a symbolic link on that path leads back to itself"),
    ("pca of a 3-d array", ["pca", "{tmp}/cube.npy", "--out", "{tmp}/pca"],
     "expected (n_snapshots, n_params), got shape (2, 3, 4)"),
    ("describe a bad config", ["describe", "--no-measure", str(TINY), "--set",
                               "optimizer.main_lr=-1"],
     "config key optimizer.main_lr = -1: must be > 0"),
    ("--set without a value", ["describe", "--no-measure", str(TINY), "--set", "seeds"],
     "--set 'seeds': expected KEY=VALUE"),
    ("prepare-data without CIFAR-10", ["prepare-data", str(TINY), "--set", "data.name=cifar10",
                                       "--set", "data.root={tmp}/empty", "--out", "{tmp}/d.pt"],
     "lrdecay prepare-data: CIFAR-10 not found under {tmp}/empty"),
    ("describe a YTE template", ["describe", "--no-measure", "{tmp}/yte.yaml"],
     "yte.yaml sets __use_yte__"),
]


@pytest.mark.parametrize(("argv", "fragment"), [row[1:] for row in COMMAND_ROWS],
                         ids=[row[0] for row in COMMAND_ROWS])
def test_a_command_error_is_one_message_with_the_fix(tmp_path: Path, capsys, argv: list[str],
                                                      fragment: str) -> None:
    from lrdecay.tooling import cli

    (tmp_path / "text.npy").write_text("not an array\n")
    np.save(tmp_path / "main.npy", _RNG.normal(size=(8, 20)).astype(np.float32))
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "empty").mkdir()
    (tmp_path / "yte.yaml").write_text("__use_yte__: true\n")
    code = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err


# -- the file system fails under a write: the error names the file and the fix ------------------
# (id, errno, fragment)
DISK_ROWS = [
    ("full disk", 28, "the file system is full (No space left on device). Fix: free space"),
    ("quota", 122, "the disk quota is used up"),
    ("read-only mount", 30, "the file system is mounted read-only (Read-only file system). "
     "Fix: point output_dir at a writable folder"),
]
# (id, what writes: a callable of (folder) that writes a work file through lrdecay.core.io)
WRITERS = {
    "table": lambda out: io.write_text(out / "t.csv", "a\n1\n"),
    "checkpoint": lambda out: io.save_array(out / "a.npy", np.zeros(3), {}),
    "snapshot memmap": lambda out: io.open_memmap(out / "s.npy", "w+", dtype="f4", shape=(4, 4)),
    "published output folder": lambda out: io.atomic_dir(out / "segment").__enter__(),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize(("code", "fragment"), [row[1:] for row in DISK_ROWS],
                         ids=[row[0] for row in DISK_ROWS])
def test_a_failing_disk_is_named_with_the_path(tmp_path: Path, monkeypatch, writer: str,
                                               code: int, fragment: str) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    for module, name in ((os, "posix_fallocate"), (io.tempfile, "mkstemp"),
                         (io.tempfile, "mkdtemp")):
        monkeypatch.setattr(module, name, fail)  # where each writer meets the disk first
    with pytest.raises(io.WriteError) as info:
        WRITERS[writer](tmp_path)
    message = str(info.value)
    assert message.startswith(f"cannot write {tmp_path}/"), message
    assert fragment in message


@pytest.fixture
def read_only_mount(tmp_path: Path):
    """A real read-only bind mount of a folder under tmp_path (root only: skipped elsewhere)."""
    source, mount = tmp_path / "source", tmp_path / "read-only"
    source.mkdir()
    mount.mkdir()
    bind = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)],
                                 capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_real_read_only_mount_is_named_with_the_path(read_only_mount: Path,
                                                       writer: str) -> None:
    """As the injected errno 30 above, on a real read-only file system."""
    with pytest.raises(io.WriteError) as info:
        WRITERS[writer](read_only_mount)
    message = str(info.value)
    assert message.startswith(f"cannot write {read_only_mount}/"), message
    assert DISK_ROWS[2][2] in message, message
    assert not any(read_only_mount.iterdir())


# -- a finished job's folder deleted or its table edited in the middle of a study ---------------
# (id, the folder or file under the seed folder, what is done to it, fragment of the error the
# next step gives (None: the rerun rebuilds it, identical to the uninterrupted run))
MIDWAY_ROWS = [
    ("subpath folder deleted", "subpaths/group-000", "delete", None),
    ("main segment folder deleted", "main/segment-0003", "delete", None),
    ("a metrics row cut from a finished job", "subpaths/group-000/metrics.csv", "cut",
     "subpaths/group-000/metrics.csv is truncated or overwritten"),
    ("a metrics row cut, the record resealed", "subpaths/group-000/metrics.csv", "cut+seal",
     "the training metrics do not match the plan: subpath branching at 2: 1 epoch(s) missing"),
    ("a metrics value edited by hand", "main/segment-0003/metrics.csv", "edit",
     "main/segment-0003/metrics.csv does not match its SHA-256 in metrics.csv.json"),
]


@pytest.mark.parametrize(("relative", "action", "fragment"), [row[1:] for row in MIDWAY_ROWS],
                         ids=[row[0] for row in MIDWAY_ROWS])
def test_a_finished_job_lost_midway_is_rebuilt_or_named(tmp_path: Path, relative: str,
                                                        action: str,
                                                        fragment: str | None) -> None:
    import shutil

    from lrdecay.training import trajectories

    from .conftest import assert_same_bytes, assert_same_outputs, outputs, state_bytes

    reference, config = load_tiny(tmp_path / "reference"), load_tiny(tmp_path / "run")
    train_all(reference)
    train_all(config)
    target = lrconfig.Plan(config).seed_dir() / relative
    if action == "delete":
        shutil.rmtree(target)
        train_all(config)  # as Snakemake reruns a job whose output folder is missing
        assert_same_outputs(outputs(config), outputs(reference))
        assert_same_bytes(state_bytes(config), state_bytes(reference))
        return
    lines = target.read_text().splitlines(keepends=True)
    if action.startswith("cut"):
        target.write_text("".join(lines[:2] + lines[3:]))  # a hand edit drops one epoch's row
    else:  # one number changed, same length and shape: only the checksum can tell
        head, row = lines[0].split(","), lines[2].split(",")
        column = head.index("test_acc")
        row[column] = row[column][:-1] + ("1" if row[column][-1] != "1" else "2")
        lines[2] = ",".join(row)
        target.write_text("".join(lines))
    if action == "cut+seal":  # a valid record over wrong rows: the plan check must catch it
        io.save_csv(target, pd.read_csv(target))
    plan = lrconfig.Plan(config)
    csvs = [plan.segment_dir(e) / "metrics.csv" for e in [0, *plan.segment_ends]]
    csvs += [plan.group_dir(g) / "metrics.csv" for g in range(len(plan.subpath_groups))]
    with pytest.raises((trajectories.IncompleteResultsError, io.CorruptFileError)) as info:
        trajectories.gather_metrics(csvs, tmp_path / "metrics.csv", config)
    assert fragment in str(info.value) and "Fix: delete the folder" in str(info.value)
    assert not (tmp_path / "metrics.csv").exists()


# -- a seed's gathered metrics table (gather_training's output) edited by hand -------------------
# Its readers are the jobs of these scripts (each given the inputs their rule declares; those not
# read before the metrics are left empty): the check must run in every one of them.
GATHERED_READERS = ("decay_timing", "figure1", "run_tables", "claims")
# (id, what is done to <seed>/metrics.csv, fragment of every reader's error)
GATHERED_ROWS = [
    ("a gathered value edited by hand", "edit",
     "seed-0/metrics.csv does not match its SHA-256 in metrics.csv.json"),
    ("a gathered row cut", "cut", "seed-0/metrics.csv is truncated or overwritten"),
    ("a gathered row cut, the record resealed", "cut+seal",
     "the training metrics do not match the plan: subpath branching at 6: 1 epoch(s) missing (9)"),
]


class _Named(list):
    """A stand-in for Snakemake's named lists (input, output, params, log)."""

    def __init__(self, **items: object) -> None:
        super().__init__(items.values())
        self.__dict__.update(items)


@pytest.fixture(scope="module")
def gathered(tmp_path_factory) -> tuple[dict, Path]:
    """A trained tiny seed, its gathered metrics table (with record) and its decay-timing table
    computed from it: what a hand edit of the gathered table must leave as it was."""
    from lrdecay.analysis import claims as analysis
    from lrdecay.training import trajectories

    config = load_tiny(tmp_path_factory.mktemp("gathered"))
    train_all(config)
    plan = lrconfig.Plan(config)
    csvs = [plan.segment_dir(e) / "metrics.csv" for e in [0, *plan.segment_ends]]
    csvs += [plan.group_dir(g) / "metrics.csv" for g in range(len(plan.subpath_groups))]
    table = plan.seed_dir() / "metrics.csv"
    trajectories.gather_metrics(csvs, table, config)
    io.write_csv(plan.seed_dir() / "decay_timing.csv",
                 analysis.decay_timing_table(trajectories.load_metrics(table, config)))
    return config, plan.seed_dir()


def _run_reader(script: str, seed_dir: Path, schedule: dict, out: Path) -> None:
    """The job script `script` on seed_dir's gathered table, as Snakemake runs it."""
    import runpy

    metrics, record = str(seed_dir / "metrics.csv"), str(seed_dir / "metrics.csv.json")
    inputs = {
        "decay_timing": _Named(metrics=metrics, metrics_record=record),
        "figure1": _Named(metrics=metrics, metrics_record=record, timing=""),
        "run_tables": _Named(metrics=[metrics], metrics_records=[record], timings=[],
                             sharpness=[]),
        "claims": _Named(metrics=[metrics], metrics_records=[record], variance=[],
                         coordinates=[], sharpness=[]),
    }[script]
    outputs = {
        "decay_timing": _Named(table=str(seed_dir / "decay_timing.csv")),  # the one computed
        "figure1": _Named(fig1a=[str(out / "a.pdf")], fig1b=[str(out / "b.pdf")],
                          fig1c=[str(out / "c.pdf")], fig1d=[str(out / "d.pdf")]),
        "run_tables": _Named(timing=str(out / "timing.csv"), mechanism=str(out / "bands.csv")),
        "claims": _Named(claims=str(out / "claims.csv"), trends=str(out / "trends.csv"),
                         readable=str(out / "claims.html")),
    }[script]
    params = _Named(seeds=[0], schedule=schedule, reads={"optimizer.weight_decay": 0.0})
    job = _Named(input=inputs, output=outputs, params=params, log=[str(out / "job.log")])
    runpy.run_path(str(REPO / "workflow" / "scripts" / f"{script}.py"),
                   init_globals={"snakemake": job}, run_name="__main__")


@pytest.mark.parametrize("script", GATHERED_READERS)
@pytest.mark.parametrize(("action", "fragment"), [row[1:] for row in GATHERED_ROWS],
                         ids=[row[0] for row in GATHERED_ROWS])
def test_a_hand_edit_of_the_gathered_metrics_is_named_by_every_reader(
        gathered: tuple[dict, Path], tmp_path: Path, monkeypatch, action: str, fragment: str,
        script: str) -> None:
    """Every job that reads a seed's gathered metrics (lrdecay.training.trajectories.load_metrics)
    stops on a hand edit, naming the file and the fix, and no file already computed changes."""
    import shutil

    from lrdecay.core import logs
    from lrdecay.training import trajectories

    config, source = gathered
    seed_dir = tmp_path / "seed-0"
    shutil.copytree(source, seed_dir)
    target = seed_dir / "metrics.csv"
    lines = target.read_text().splitlines(keepends=True)
    if action.startswith("cut"):
        target.write_text("".join(lines[:-1]))  # a hand edit drops the last subpath's last row
    else:  # one number changed, same length and shape: only the checksum can tell
        head, row = lines[0].split(","), lines[2].split(",")
        column = head.index("test_loss")
        row[column] = row[column][:-1] + ("1" if row[column][-1] != "1" else "2")
        lines[2] = ",".join(row)
        target.write_text("".join(lines))
    if action == "cut+seal":  # a valid record over wrong rows: the plan check must catch it
        io.save_csv(target, pd.read_csv(target))
    before = {p: p.read_bytes() for p in sorted(seed_dir.rglob("*")) if p.is_file()}
    monkeypatch.setattr(logs, "setup", lambda *args: None)  # no process-wide logging in pytest
    out = tmp_path / "out"
    with pytest.raises((trajectories.IncompleteResultsError, io.CorruptFileError)) as info:
        _run_reader(script, seed_dir, lrconfig.canonical(config["schedule"]), out)
    message = str(info.value)
    assert fragment in message, message
    assert f"Fix: delete {target} and its record metrics.csv.json and rerun" in message, message
    assert before == {p: p.read_bytes() for p in sorted(seed_dir.rglob("*")) if p.is_file()}
    assert not out.exists() or not any(out.iterdir())


def test_every_reader_of_the_gathered_metrics_is_checked_and_declares_its_record() -> None:
    """Each rule that reads a seed's gathered metrics runs a script in GATHERED_READERS (so the
    test above covers it) and declares the record as an input (so Snakemake and DVC know it
    reads it, and `dvc pull` brings it)."""
    import re

    readers, undeclared = set(), []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text(),
                                     re.MULTILINE | re.DOTALL):
            if not re.search(r"rules\.gather_training\.output\.metrics\b(?!_)", body):
                continue
            readers.add(re.search(r'"\.\./scripts/(\w+)\.py"', body)[1])
            if "rules.gather_training.output.metrics_record" not in body:
                undeclared.append(name)
    assert readers == set(GATHERED_READERS), readers
    assert not undeclared, f"rules reading metrics.csv without its record: {undeclared}"
