"""The installed package works outside a checkout: schemas ship as package data.

`pip install` (non-editable, no dependencies: they come from this venv) into a folder, then
validation and `lrdecay describe` from another folder, with the checkout off sys.path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

CHECK = """
import sys
from pathlib import Path
site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo]
import lrdecay, lrdecay.config as C
assert Path(lrdecay.__file__).resolve().is_relative_to(site), lrdecay.__file__
assert C.SCHEMA_PATH.resolve().is_relative_to(site), C.SCHEMA_PATH
config = C.load("my.yaml")
assert config["schedule"]["main_epochs"] == 150 and config["model"]["name"] == "mlp", config
try:
    C.load("my.yaml", overrides={"optimizer": {"main_lr": 0}})
except C.ConfigError as err:
    assert "optimizer.main_lr = 0: must be > 0" in str(err), err
else:
    raise AssertionError("an invalid config passed")
print("ok", C.SCHEMA_PATH)
"""


def _copy_sources(dest: Path) -> None:
    """What a wheel is built from (pyproject, README, the package), away from the shared
    checkout, so the build writes nothing there."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "lrdecay", dest / "lrdecay",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def test_installed_package_validates_and_describes_outside_a_checkout(tmp_path: Path) -> None:
    _copy_sources(tmp_path / "src")
    site = tmp_path / "site"
    # Offline with this venv's setuptools where it has one (Python <= 3.11 venvs do); otherwise
    # pip fetches the build backend pyproject.toml names, as a user's `pip install .` does.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") \
        else []
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *offline,
         "--target", str(site), str(tmp_path / "src")],
        capture_output=True, text=True, timeout=180,
    )
    assert built.returncode == 0, built.stderr
    shipped = sorted(p.name for p in (site / "lrdecay" / "schemas").glob("*.yaml"))
    assert shipped == ["config.schema.yaml", "toy.schema.yaml"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "my.yaml").write_text("run_name: mine\nseeds: [1]\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PYTHONSAFEPATH", None)
    run = {"cwd": work, "env": env, "capture_output": True, "text": True, "timeout": 120}
    checked = subprocess.run([sys.executable, "-c", CHECK, str(site), str(REPO)], **run)
    assert checked.returncode == 0, checked.stderr
    assert "ok" in checked.stdout
    described = subprocess.run(
        [sys.executable, "-m", "lrdecay.cli", "describe", "--no-measure", "my.yaml"], **run
    )
    assert described.returncode == 0, described.stderr
    assert "results/mine" in described.stdout and "85,002" in described.stdout, described.stdout
