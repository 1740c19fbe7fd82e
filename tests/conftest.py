"""Shared fixtures: tiny configs and prepared data that every test can make in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lrdecay import config as lrconfig
from lrdecay import data

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "tiny.yaml"


def load_tiny(tmp_path: Path, **overrides: object) -> dict:
    """The tiny preset with its outputs under `tmp_path` and any section overridden."""
    return lrconfig.load(TINY, overrides={"output_dir": str(tmp_path / "results"), **overrides})


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    return load_tiny(tmp_path)


@pytest.fixture
def tiny_data(tiny: dict) -> tuple[dict, Path]:
    """The tiny config and its prepared dataset file."""
    plan = lrconfig.Plan(tiny)
    data.prepare(tiny["data"], tiny["seed"], plan.data_path)
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
