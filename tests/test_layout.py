"""Every path pattern once: lrdecay.study.layout spells the training files' names, nothing else
does."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
import yaml

from lrdecay.config import validate as lrconfig
from lrdecay.study import layout

ROOT = Path(__file__).resolve().parents[1]
# The spellings a module would use to name a layout file itself: each name's literal part, and
# the old resume-folder spellings (resume folders are named like their rule now).
SPELLINGS = sorted({
    *(n.prefix.rpartition("/")[2] for n in (
        layout.SEGMENT, layout.GROUP, layout.SHARD, layout.SEGMENT_JOB, layout.GROUP_JOB,
        layout.SHARD_JOB, layout.BRANCH)),
    layout.RESUME, layout.RESUME_STATE, layout.METRICS, layout.SNAPSHOTS, layout.STATE,
    layout.WEIGHTS, "main-segment", "subpath-group",
})


def _python_strings(text: str) -> list[tuple[int, str]]:
    """(line, text) of the string literals of Python source, docstrings left out (prose)."""
    tree = ast.parse(text)
    prose = {id(node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in prose]


def _snakemake_strings(text: str) -> list[tuple[int, str]]:
    """(line, text) of the string tokens of a Snakemake file (its syntax tokenizes as Python's;
    comments are no tokens of this kind, triple-quoted docstrings are left out)."""
    return [(tok.start[0], tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.STRING and not tok.string.lstrip("rbfRBF").startswith('"""')]


def respellings(root: Path) -> list[str]:
    """`file:line: literal` for each string literal under lrdecay/ and workflow/ (and the
    Snakefile) outside lrdecay/study/layout.py that spells a layout name."""
    files = [root / "Snakefile", *sorted((root / "lrdecay").rglob("*.py")),
             *sorted((root / "workflow").rglob("*.py")),
             *sorted((root / "workflow").rglob("*.smk"))]
    found = []
    for path in files:
        if path == root / "lrdecay" / "study" / "layout.py":
            continue
        text = path.read_text()
        strings = _python_strings(text) if path.suffix == ".py" else _snakemake_strings(text)
        for line, value in strings:
            found += [f"{path.relative_to(root)}:{line}: {name!r} in {value!r}"
                      for name in SPELLINGS if name in value]
    return found


def test_no_module_spells_a_layout_name():
    assert SPELLINGS  # the check looks for something
    assert respellings(ROOT) == []


def test_a_planted_respelling_is_found(tmp_path):
    # the same tree with one module naming a segment's checkpoint itself, in an f-string
    for name in ("lrdecay", "workflow"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "Snakefile").write_text(
        (ROOT / "Snakefile").read_text()
        + '\nPLANTED = f"{RUN_DIR}/main/segment-{end:04d}/state.pt"  # a second spelling\n')
    found = respellings(tmp_path)
    assert len(found) == 2 and all(line.startswith("Snakefile:") for line in found)
    assert any("'segment-'" in line for line in found)
    assert any("'state.pt'" in line for line in found)


def test_names_and_patterns_agree():
    assert layout.SEGMENT.name(5) == "main/segment-0005"
    assert layout.SEGMENT.pattern == "main/segment-{end}"
    assert layout.GROUP.name(12) == "subpaths/group-012"
    assert layout.SHARD.name(1) == "landscape/shard-001.csv"
    assert layout.BRANCH_WEIGHTS.name(40) == "branch-0040.weights.pt"
    assert layout.SEGMENT_JOB.name(5) == "main_segment-0005"  # like its log and rule
    assert layout.BRANCH_SNAPSHOTS.glob == "branch-*.npy"
    assert layout.SEGMENT.constraint == r"\d{4}" and layout.GROUP.constraint == r"\d{3}"
    with pytest.raises(ValueError, match="4 digits"):
        layout.SEGMENT.name(10_000)
    with pytest.raises(ValueError, match="{end}"):
        layout.SEGMENT.name("{group}")


def test_plan_formats_the_rules_patterns():
    run = lrconfig.Plan({"output_dir": "out", "run_name": "r", "seeds": [0]})
    assert str(run.segment_dir("{end}", seed="{seed}")) == "out/r/seed-{seed}/main/segment-{end}"
    assert str(run.group_dir(3, seed=0)) == "out/r/seed-0/subpaths/group-003"
    assert str(run.for_seed(0).segment_work(5)) == "out/r/seed-0/.resume/main_segment-0005"
    assert str(run.for_seed(0).group_work(2)) == "out/r/seed-0/.resume/subpath_group-002"


def test_schema_limits_follow_the_widths():
    """The schema's maxima are documented there (a user reads them): they must be what the
    widths allow, and MAX_GROUPS is derived from the group width."""
    schema_path = ROOT / "lrdecay" / "config" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    props = schema["properties"]
    assert props["schedule"]["properties"]["main_epochs"]["maximum"] == layout.SEGMENT.limit - 1
    assert props["landscape"]["properties"]["shards"]["maximum"] == layout.SHARD.limit
    assert lrconfig.MAX_GROUPS == layout.GROUP.limit
