"""Logging for jobs: progress to the console and to the job's Snakemake log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup(log_path: str | Path | None = None) -> None:
    """Log INFO lines with timestamps to stderr and, if given, to `log_path`."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
