"""Logging for jobs: progress and failures to the console and to the job's Snakemake log file."""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("lrdecay")


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  trace: TracebackType | None) -> None:
    """sys.excepthook: a job's fatal error goes through logging, so the log file holds it."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    log.critical("job failed: %s: %s", kind.__name__, error, exc_info=(kind, error, trace))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux's VmHWM belongs to the process's own address space. ru_maxrss is not used there: it
    keeps the peak of the parent that forked it (a job started by a large Snakemake or pytest
    process would report the parent's size).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


_imported = time.monotonic()


def process_age_s() -> float:
    """Seconds since this process started, imports included (Linux /proc; elsewhere since this
    module was imported), so a job's wall time counts torch's import and CUDA's start-up."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5), counted after the command name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _imported


# Parsed by lrdecay.reference for the provenance file's wall time per stage: keep the wording.
END_OF_JOB = "job ended after {wall:.1f} s; peak memory {peak:.0f} MB"


def _log_end_of_job() -> None:
    log.info(END_OF_JOB.format(wall=process_age_s(), peak=peak_memory_mb()))


def setup(log_path: str | Path | None = None) -> None:
    """Log INFO lines with timestamps to stderr and, if given, to `log_path`.

    Snakemake shows a failed job's `log:` file and SLURM keeps only that file next to the job's
    outputs, so an uncaught exception is logged there too (with its traceback and the message
    saying what to fix), not only printed on stderr. The job's wall time and peak memory are
    logged at exit.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font-substitution notes
    logging.captureWarnings(True)  # warnings (e.g. from numpy or torch) land in the log as well
    sys.excepthook = _log_uncaught
    # The measured peak, beside the mem_mb the job asked for (lrdecay.resources), in every log.
    atexit.unregister(_log_end_of_job)
    atexit.register(_log_end_of_job)
