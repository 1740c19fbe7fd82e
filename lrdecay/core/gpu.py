"""Give each concurrent GPU job its own device on a multi-GPU host.

Snakemake's ``--resources gpu=N`` only *counts* GPUs: it lets N GPU jobs run at once but does not
tell any of them which device to use, so without help they would all pile onto ``cuda:0``. A job
enters :func:`device_slot` *before torch initialises CUDA*; the context manager takes an exclusive
``fcntl.flock`` on one per-device lock file and sets ``CUDA_VISIBLE_DEVICES`` to that device.
The kernel drops the lock when the process exits, however it dies, so a crashed job never leaves
a device blocked.

Allocations made by someone else win: if ``CUDA_VISIBLE_DEVICES`` is already set (by the user or by
SLURM), or SLURM reports a GPU allocation, nothing is changed.

Environment variables:

- ``LRDECAY_GPU_COUNT``: number of devices to assume (simulated devices for tests and CPU CI);
  otherwise ``nvidia-smi -L`` is asked, then ``torch.cuda.device_count()`` in a subprocess.
- ``LRDECAY_GPU_LOCK_DIR``: folder of the lock files (default ``<tempdir>/lrdecay-gpu-locks``).

Command-line use (for shell rules): ``python -m lrdecay.core.gpu [--device cuda] -- CMD ARGS...``
runs ``CMD`` with ``CUDA_VISIBLE_DEVICES`` set while the slot is held.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# Variables through which SLURM hands a job its GPUs; when present the cluster already decided.
SLURM_GPU_VARS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL")


def wants_slot(device: str) -> bool:
    """True for device strings that ask for "some GPU": "cuda", "gpu", "auto".

    "cpu" needs no GPU, and "cuda:N" names a device itself, so neither takes a slot (renumbering
    the visible devices would make "cuda:N" point elsewhere or nowhere).
    """
    return device.strip().lower() in ("cuda", "gpu", "auto")


def external_allocation() -> str | None:
    """The GPU assignment made outside lrdecay, if any: ``CUDA_VISIBLE_DEVICES`` or SLURM's."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # set, even empty ("no GPU"), is a decision
        return os.environ["CUDA_VISIBLE_DEVICES"]
    for var in SLURM_GPU_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def count_devices() -> int:
    """Number of GPUs on this host, without initialising CUDA in this process.

    CUDA reads ``CUDA_VISIBLE_DEVICES`` only once, so counting through torch here would freeze the
    device list before we set it; hence nvidia-smi, or torch in a throw-away subprocess.
    """
    simulated = os.environ.get("LRDECAY_GPU_COUNT")
    if simulated is not None and simulated.strip():
        return max(0, int(simulated))
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def lock_dir() -> Path:
    """Folder holding one lock file per device; shared by every user of the host."""
    env = os.environ.get("LRDECAY_GPU_LOCK_DIR")
    path = Path(env) if env else Path(tempfile.gettempdir()) / "lrdecay-gpu-locks"
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:  # sticky and world-writable like /tmp, so other users' jobs can lock too
            os.chmod(path, 0o1777)
        except OSError:
            pass
    return path


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock ``path`` without blocking; the fd, or None if held elsewhere."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # a link: ELOOP
        writable = True
        try:  # the umask may have narrowed 0o666; other users' jobs must open it too
            os.fchmod(fd, 0o666)
        except OSError:
            pass
    except PermissionError:  # another user's lock file without write access: flock needs none
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if writable:  # who holds it, for a human looking at the folder; the lock is the flock
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire_slot(n_devices: int, folder: Path, poll_seconds: float = 2.0) -> tuple[int, int]:
    """Block until one of ``n_devices`` slots is free; return (device index, lock fd)."""
    # Host name in the file name: a lock folder on a shared file system must not make two
    # nodes' device 0 exclude each other.
    host = socket.gethostname().split(".")[0]
    waiting_since: float | None = None
    while True:
        for index in range(n_devices):
            fd = _try_lock(folder / f"{host}-gpu{index}.lock")
            if fd is not None:
                if waiting_since is not None:
                    log.warning(
                        "lrdecay.core.gpu: got GPU %d after waiting %.0f s",
                        index,
                        time.monotonic() - waiting_since,
                    )
                return index, fd
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.warning(
                "lrdecay.core.gpu: all %d GPU slots in %s are busy; waiting for one to free up",
                n_devices,
                folder,
            )
        time.sleep(poll_seconds)


@contextmanager
def device_slot(device: str = "cuda", poll_seconds: float = 2.0) -> Iterator[str | None]:
    """Hold one GPU exclusively for the duration of the block; enter before CUDA is initialised.

    Yields the ``CUDA_VISIBLE_DEVICES`` value in effect inside the block (``None`` when nothing
    restricts the devices: a CPU device, a host without GPUs, or a SLURM allocation that set no
    ``CUDA_VISIBLE_DEVICES``). Inside the block the job should use ``cuda:0``, i.e. the first
    visible device. On exit the lock is released and the previous environment restored.
    """
    if not wants_slot(device):
        yield os.environ.get("CUDA_VISIBLE_DEVICES")
        return
    existing = external_allocation()
    if existing is not None:
        log.info("lrdecay.core.gpu: keeping the existing GPU allocation %r", existing)
        yield os.environ.get("CUDA_VISIBLE_DEVICES")
        return
    n_devices = count_devices()
    if n_devices == 0:
        log.info("lrdecay.core.gpu: no GPU found; nothing to allocate")
        yield None
        return
    index, fd = acquire_slot(n_devices, lock_dir(), poll_seconds)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    log.info("lrdecay.core.gpu: pid %d uses GPU %d of %d", os.getpid(), index, n_devices)
    try:
        yield str(index)
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Run a command on its own GPU: ``python -m lrdecay.core.gpu [--device D] -- CMD ARGS...``."""
    parser = argparse.ArgumentParser(prog="python -m lrdecay.core.gpu", description=main.__doc__)
    parser.add_argument(
        "--device", default="cuda", help="cuda/gpu/auto take a slot; cpu, cuda:N do not"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with device_slot(args.device) as visible:
        if not command:
            print("" if visible is None else visible)
            return 0
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
