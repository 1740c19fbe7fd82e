"""Logging for jobs: progress and failures to the console and to the job's Snakemake log file."""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from lrdecay.core import io

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


# Parsed by lrdecay.analysis.reference for the provenance file's wall time per stage: keep the
# wording. The CPU time (user + system, imports included) is the job's cost on a shared machine,
# where the wall time depends on the load (benchmarks/quick_dag.py sums it per rule).
END_OF_JOB = "job ended after {wall:.1f} s; peak memory {peak:.0f} MB; CPU {cpu:.1f} s"


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used, all threads, imports included."""
    times = os.times()
    return times.user + times.system


def _log_end_of_job() -> None:
    log.info(END_OF_JOB.format(wall=process_age_s(), peak=peak_memory_mb(), cpu=cpu_s()))


DETAIL = {"detail": True}  # `extra=` of lines that go to the job's log file only


class _NoDetail(logging.Filter):
    """Keeps `extra=DETAIL` lines (per-epoch losses, per-chunk steps) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "detail", False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """A job's progress on the console: one line at most every `every_fraction` of the work or
    `every_s` seconds, with the whole job's elapsed time and an estimate of the time left.

    `total` counts the job's units of work (path-epochs, column blocks); `done` may start above
    zero (a resumed job), and the estimate uses the rate of this process only.
    """

    def __init__(self, what: str, total: float, unit: str, done: float = 0,
                 every_fraction: float = 0.1, every_s: float = 30.0,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit = what, max(total, 1e-12), unit
        self.done = self.start_done = done
        self.every_fraction, self.every_s = every_fraction, every_s
        self.log, self.clock = logger or log, clock
        self.started = self.last_time = clock()
        self.last_done = done

    def skip(self, units: float) -> None:
        """Count `units` done before this process (resumed or finished work): no line, and the
        estimate of the time left ignores them."""
        self.done = min(self.total, self.done + units)
        self.start_done = self.last_done = self.done

    def advance(self, units: float = 1) -> None:
        """Count `units` more done; log a line if 10 % of the work or 30 s passed since the last."""
        self.done = min(self.total, self.done + units)
        now = self.clock()
        if (self.done >= self.total
                or self.done - self.last_done >= self.every_fraction * self.total
                or now - self.last_time >= self.every_s):
            self.last_time, self.last_done = now, self.done
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """'<what>: 40 % (120 of 300 path-epochs), 35 s so far, about 52 s left'."""
        elapsed = (self.clock() if now is None else now) - self.started
        percent = 100 * self.done / self.total
        text = (f"{self.what}: {percent:.0f} % ({self.done:g} of {self.total:g} {self.unit}), "
                f"{_duration(elapsed)} so far")
        ran = self.done - self.start_done
        if self.done >= self.total:
            return text + ", done"
        if ran > 0:
            return text + f", about {_duration(elapsed / ran * (self.total - self.done))} left"
        return text


def setup(log_path: str | Path | None = None) -> None:
    """Log INFO lines with timestamps to stderr and, if given, to `log_path`.

    Snakemake shows a failed job's `log:` file and SLURM keeps only that file next to the job's
    outputs, so an uncaught exception is logged there too (with its traceback and the message
    saying what to fix), not only printed on stderr. The job's wall time and peak memory are
    logged at exit. With a log file, lines logged with `extra=DETAIL` (one per epoch or chunk)
    go to the file only: parallel jobs then write a few progress lines each to the console
    (`Progress`), not thousands.
    """
    console = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [console]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        # appended to, so a planted link would have us write onto its target (lrdecay.core.io.guard)
        handlers.append(logging.FileHandler(io.guard(log_path), mode="a"))
        console.addFilter(_NoDetail())
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font-substitution notes
    logging.captureWarnings(True)  # warnings (e.g. from numpy or torch) land in the log as well
    sys.excepthook = _log_uncaught
    # The measured peak, beside the mem_mb the job asked for (lrdecay.config.resources), in every
    # log.
    atexit.unregister(_log_end_of_job)
    atexit.register(_log_end_of_job)
