"""The package's layers: imports go down only, and every module sits in a layer folder.

Layers, lowest first (a module may import its own layer and the ones before it):
- core: plumbing every layer uses: atomic I/O, locks, logging, GPU slots, the config's error type
  and hash
- study: what the study is, without torch: the plan (jobs, layout, the keys each job reads), the
  learning-rate schedules, the PCA's memory model
- training: datasets, models, the engines and the run loop that train the main path and the
  subpaths, and the trajectories they write
- analysis: what the trajectories say: PCA, loss landscape, sharpness, the claims' verdicts, the
  summary, figures and the reference-run package
- toy: the toy model of Section 3 (Figures 3 and 4): a pipeline of its own
- config: what a config may say and what it costs: the schemas, validation against every registry
  (models, datasets, the toy), a sweep's points, the resource requests
- tooling: what drives the rest: dvc.yaml generation and the lrdecay command

Written by the relayer script (the layout move); edit LAYERS here when a layer is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lrdecay"
LAYERS = ['core', 'study', 'training', 'analysis', 'toy', 'config', 'tooling']
RANK = {name: i for i, name in enumerate(LAYERS)}


def _modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path, package: Path = PACKAGE) -> str | None:
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 and parts[0] in RANK else None


def _imported(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) for every lrdecay import in `path`, in functions too."""
    own = ".".join(("lrdecay", *path.relative_to(package).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = own.split(".")[: len(own.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "lrdecay"]


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """`file:line imports lrdecay.x (layer a above layer b)` for each import against the order."""
    problems = []
    for path in _modules(package):
        mine = _layer(path, package)
        if mine is None:
            continue
        for line, name in _imported(path, package):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else None
            if target in RANK and RANK[target] > RANK[mine]:
                problems.append(f"{path.relative_to(package.parent)}:{line} imports {name} "
                                f"(layer {target} is above {mine})")
    return problems


def outside_layers(package: Path = PACKAGE) -> list[str]:
    """Modules that sit in no layer folder (the package's own __init__.py aside)."""
    return [str(p.relative_to(package.parent)) for p in _modules(package)
            if _layer(p, package) is None and p != package / "__init__.py"]


def test_imports_go_down_the_layers_only():
    assert upward_imports() == []


def test_every_module_sits_in_a_layer_folder():
    assert outside_layers() == []


def test_every_layer_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
               and not p.name.endswith(".egg-info")}
    assert folders == set(LAYERS)


def test_the_checks_fail_on_a_planted_upward_import_and_a_stray_module(tmp_path):
    """The checks can fail: a core module importing training, and a module beside the layers."""
    package = tmp_path / "lrdecay"
    for layer in LAYERS:
        (package / layer).mkdir(parents=True)
        (package / layer / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "core" / "io.py").write_text("import os\n")
    (package / "training" / "engine.py").write_text("from lrdecay.core import io\n")
    assert upward_imports(package) == [] and outside_layers(package) == []
    (package / "core" / "io.py").write_text(
        "def f():\n    from lrdecay.training.engine import Trainer\n")
    (package / "study" / "plan.py").write_text("from lrdecay import training\n")
    (package / "stray.py").write_text("")
    assert upward_imports(package) == [
        "lrdecay/core/io.py:2 imports lrdecay.training.engine.Trainer "
        "(layer training is above core)",
        "lrdecay/study/plan.py:1 imports lrdecay.training (layer training is above study)"]
    assert outside_layers(package) == ["lrdecay/stray.py"]


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_holds_modules(layer):
    assert any(p.name != "__init__.py" for p in (PACKAGE / layer).rglob("*.py"))
