"""Subprocess timeouts in the tests scale with LRDECAY_TEST_TIMEOUT_SCALE (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import conftest

SLEEP = [sys.executable, "-c", "import time; time.sleep(1.0)"]


def test_a_timeout_is_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "TIMEOUT_SCALE", 20.0)  # 0.1 s x 20 = 2 s > the 1 s sleep
    assert subprocess.run(SLEEP, timeout=0.1).returncode == 0


def test_a_timeout_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "TIMEOUT_SCALE", 1.0)
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        subprocess.run(SLEEP, timeout=0.1)
    assert any("LRDECAY_TEST_TIMEOUT_SCALE" in note for note in caught.value.__notes__)


def test_a_bad_scale_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "-1", "x", "inf", "nan"):
        monkeypatch.setenv("LRDECAY_TEST_TIMEOUT_SCALE", value)
        with pytest.raises(pytest.UsageError, match="LRDECAY_TEST_TIMEOUT_SCALE"):
            conftest._timeout_scale()
