"""One writer per output folder and per job, with the holder named to whoever comes second.

Snakemake locks per working directory (``.snakemake/locks``), so two runs started from different
folders that share ``output_dir`` would write into one run folder; and after a ``kill -9`` of
Snakemake its running jobs live on, so a rerun would start a second copy of a job that shares the
first one's resume state. Both are refused here with ``fcntl.flock`` locks inside the run folder:

- ``<run>/.lock``: held by the Snakemake process for the whole run (taken in its ``onstart``
  handler, so dry runs and the jobs Snakemake spawns on cluster nodes never take it);
- ``<run>/.locks/<job>.lock``: held by a training job's own process while it runs.

The kernel drops a flock when its holder dies, however it dies, so a lock is never stale and
nobody has to delete it; the file only records who holds it (pid, host, working folder, start
time, command) for the message the second writer gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lrdecay.core import io

RUN_LOCK = ".lock"
JOB_LOCKS = ".locks"


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it and says what to do."""


def _holder(handle: IO[str]) -> tuple[str, str]:
    """(description, pid) of the process recorded in a lock file."""
    handle.seek(0)
    try:
        record = json.loads(handle.read())
        return (f"pid {record['pid']} on host {record['host']}, started {record['started']} in "
                f"{record['cwd']} ({record['command']})", str(record["pid"]))
    except (ValueError, KeyError, TypeError):  # the holder is between taking and describing it
        return "a process that is starting up", "PID"


def acquire(path: str | Path, what: str, fix: str, root: str | Path | None = None) -> IO[str]:
    """Take the exclusive lock `path` without waiting and record this process in it.

    Returns the open file: the lock lasts until it is closed or this process ends.
    Raises LockHeld naming the holder, and `fix` with {pid} filled in, when another process
    has it.
    """
    path = io.guard(path, root)  # a planted link would have us truncate the file it points at
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    handle = open(fd, "a+")  # noqa: SIM115 (the caller owns it for as long as it holds the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder, pid = _holder(handle)
        handle.close()
        raise LockHeld(f"{what} is in use by {holder}. {fix.format(pid=pid)} (lock file: {path})"
                       ) from None
    handle.seek(0)
    handle.truncate()
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "command": " ".join(sys.argv)[:300]}, handle)
    handle.flush()
    return handle


def hold_run(run_dir: str | Path) -> IO[str]:
    """Own the run folder for the life of this (Snakemake) process."""
    return acquire(
        Path(run_dir) / RUN_LOCK, f"output folder {run_dir}",
        "Two runs must not write into one output folder: wait for the other run to finish, or "
        "give this one another run_name or output_dir.",
    )


@contextmanager
def job(run_dir: str | Path, name: str) -> Iterator[None]:
    """Own job `name` of the run while the block runs: a second copy of it is refused.

    A copy left running by a killed Snakemake still holds the lock, so the rerun's job stops
    with its pid instead of training on (and racing for) the same resume state.
    """
    handle = acquire(
        Path(run_dir) / JOB_LOCKS / f"{name}.lock", f"job {name}",
        "It is probably left over from a Snakemake that was killed: wait for it to finish or "
        "stop it (kill {pid}), then rerun.", root=run_dir,
    )
    try:
        yield
    finally:
        handle.close()
