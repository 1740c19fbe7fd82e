"""The GPU slot allocator (lrdecay.core.gpu), on CPU with simulated devices (LRDECAY_GPU_COUNT)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lrdecay.core import gpu
from lrdecay.core.gpu import device_slot
from tests.conftest import REPO

ALLOCATION_VARS = ("CUDA_VISIBLE_DEVICES", *gpu.SLURM_GPU_VARS)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No allocation inherited from the test runner; a private lock folder per test."""
    for var in ALLOCATION_VARS:
        monkeypatch.delenv(var, raising=False)
    locks = tmp_path / "locks"
    monkeypatch.setenv("LRDECAY_GPU_LOCK_DIR", str(locks))
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "2")
    return locks


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATION_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("SNAKEMAKE_PROFILE", None)
    env.update(extra)
    return env


@pytest.mark.parametrize("device", ["cpu", "cuda:1", "mps"])
def test_devices_that_need_no_slot_change_nothing(device: str) -> None:
    with device_slot(device) as visible:
        assert visible is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


@pytest.mark.parametrize("device", ["cuda", "gpu", "auto", " CUDA "])
def test_simulated_devices_give_a_slot_and_restore_the_env(device: str) -> None:
    with device_slot(device) as visible:
        assert visible == "0"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_no_devices_is_a_no_op(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "0")
    with device_slot("cuda") as visible:
        assert visible is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not clean_env.exists()  # nothing was locked


@pytest.mark.parametrize("value", ["3", "1,2", ""])
def test_existing_cuda_visible_devices_is_respected(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path, value: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    with device_slot("cuda") as visible:
        assert visible == value
        assert os.environ["CUDA_VISIBLE_DEVICES"] == value
    assert os.environ["CUDA_VISIBLE_DEVICES"] == value
    assert not clean_env.exists()


@pytest.mark.parametrize("var", gpu.SLURM_GPU_VARS)
def test_slurm_allocation_is_respected(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path, var: str
) -> None:
    monkeypatch.setenv(var, "1")
    with device_slot("cuda") as visible:
        assert visible is None  # SLURM's cgroup/gres decides; we set nothing
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not clean_env.exists()


def test_two_holders_get_different_slots(clean_env: Path) -> None:
    folder = gpu.lock_dir()
    first, fd1 = gpu.acquire_slot(2, folder)
    second, fd2 = gpu.acquire_slot(2, folder)
    try:
        assert {first, second} == {0, 1}
        # The lock file says who holds it, for humans.
        held = sorted(p.read_text().strip() for p in folder.glob("*-gpu*.lock"))
        assert held == [str(os.getpid())] * 2
    finally:
        os.close(fd1)
        os.close(fd2)


def test_slot_is_released_on_exit_for_other_processes() -> None:
    with device_slot("cuda") as visible:
        assert visible == "0"
    probe = subprocess.run(
        [sys.executable, "-m", "lrdecay.core.gpu", "--device", "cuda"],
        env=subprocess_env(LRDECAY_GPU_COUNT="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "0"


def test_slot_is_released_when_the_holder_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrdecay.core.gpu",
            "--",
            sys.executable,
            "-c",
            "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
            "time.sleep(60)",
        ],
        env=subprocess_env(LRDECAY_GPU_COUNT="1"),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "0"  # slot 0 of 1 is now held
        (lock_file,) = gpu.lock_dir().glob("*-gpu0.lock")
        assert gpu._try_lock(lock_file) is None
        os.killpg(holder.pid, signal.SIGKILL)  # no clean-up code runs
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "1")
    with device_slot("cuda", poll_seconds=0.05) as visible:
        assert visible == "0"


def test_waits_with_a_log_line_while_all_slots_are_busy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "1")
    index, fd = gpu.acquire_slot(1, gpu.lock_dir())
    release = threading.Timer(0.5, os.close, args=(fd,))
    release.start()
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="lrdecay.core.gpu"):
        with device_slot("cuda", poll_seconds=0.05) as visible:
            assert visible == str(index)
    release.join()
    assert time.monotonic() - t0 >= 0.4
    assert "all 1 GPU slots" in caplog.text and "busy" in caplog.text


def test_count_devices_asks_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("LRDECAY_GPU_COUNT")
    assert gpu.count_devices() == 2
    monkeypatch.setenv("LRDECAY_GPU_COUNT", "3")
    assert gpu.count_devices() == 3


def test_cli_runs_the_command_on_its_slot() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lrdecay.core.gpu", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],
        env=subprocess_env(LRDECAY_GPU_COUNT="2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "0"


# The acceptance test: Snakemake only counts GPUs, the allocator must spread the jobs.
JOB = """\
import json, os, sys, time
from lrdecay.core.gpu import device_slot
with device_slot("cuda") as visible:
    start = time.time()
    time.sleep(2.0)  # hold the device so that the three jobs overlap
    record = dict(visible=visible, env=os.environ.get("CUDA_VISIBLE_DEVICES"),
                  start=start, end=time.time(), pid=os.getpid())
json.dump(record, open(sys.argv[1], "w"))
"""

SNAKEFILE = """\
rule all:
    input:
        expand("out/job{{i}}.json", i=range(3)),


rule gpu_job:
    output:
        "out/job{{i}}.json",
    resources:
        gpu=1,
    shell:
        "{python} job.py {{output}}"
"""


def snakemake_command() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def test_three_concurrent_snakemake_gpu_jobs_get_three_devices(tmp_path: Path) -> None:
    work = tmp_path / "wf"
    work.mkdir()
    (work / "job.py").write_text(JOB)
    (work / "Snakefile").write_text(SNAKEFILE.format(python=sys.executable))
    run = subprocess.run(
        [*snakemake_command(), "--cores", "3", "--resources", "gpu=3", "--nocolor"],
        cwd=work,
        env=subprocess_env(LRDECAY_GPU_COUNT="3", LRDECAY_GPU_LOCK_DIR=str(tmp_path / "locks")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(p.read_text()) for p in sorted((work / "out").glob("job*.json"))]
    assert len(records) == 3
    # The jobs really ran at the same time, so each needed its own device.
    assert max(r["start"] for r in records) < min(r["end"] for r in records), records
    assert all(r["visible"] == r["env"] for r in records), records
    assert sorted(r["env"] for r in records) == ["0", "1", "2"], textwrap.indent(
        json.dumps(records, indent=1), "  "
    )
