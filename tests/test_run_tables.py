"""Run-level tables are computed by analysis rules; figure rules only draw them (issue 22).

The headline numbers (summary.json, headline.json) are read from the run-level tables, so a
table written by a figure job would make them depend on plotting code: an edit of
lrdecay/analysis/figures.py would rerun, and could change, the numbers the study reports.
"""

from __future__ import annotations

import re

from .conftest import REPO

RULES = REPO / "workflow" / "rules"
SCRIPTS = REPO / "workflow" / "scripts"
TABLE = re.compile(r"\.(csv|npy|npz|json)\b")


def rules() -> dict[str, tuple[str, str]]:
    """rule name -> (its output section, its script's text)."""
    found = {}
    for path in sorted(RULES.glob("*.smk")):
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text()):
            output = re.search(r"(?ms)^    output:\n(.*?)(?=^    \w+:)", body).group(1)
            script = re.search(r'script:\n\s+"\.\./scripts/(\w+\.py)"', body).group(1)
            found[name] = (output, (SCRIPTS / script).read_text())
    return found


def test_figure_rules_write_no_table_and_compute_nothing() -> None:
    """Every job that draws (its script imports lrdecay.analysis.figures or lrdecay.toy.figures)
    outputs figures only and calls no analysis: no .csv/.npy/.npz/.json output, no write_csv, no
    lrdecay.analysis.claims. The run-level tables come from rule run_tables, which draws nothing."""
    found = rules()
    drawing = {name for name, (_, script) in found.items()
               if re.search(r"^from lrdecay(\.toy|\.analysis)?(\.figures)? import "
                            r".*\b(figures|figure3|make_figures)\b", script, re.M)}
    assert {"figure1", "figure2", "figure_mechanism", "toy_figure3", "toy_figures"} <= drawing
    for name in drawing:
        output, script = found[name]
        assert not TABLE.search(output), f"rule {name} (a figure rule) writes a table"
        assert "write_csv" not in script and not re.search(r"\bclaims\b", script), name
    output, script = found["run_tables"]
    assert "decay_timing.csv" in output and "norm_sharpness.csv" in output
    assert not re.search(r"^from lrdecay.* import .*figures", script, re.M)
    assert re.search(r"^from lrdecay\.analysis import .*\bclaims\b", script, re.M)
    # the headline numbers read the table the analysis rule writes
    summary = re.search(r"(?ms)^rule summary:\n(.*?)(?=^rule |\Z)",
                        (RULES / "figures.smk").read_text()).group(1)
    assert "timing=upstream(rules.run_tables.output.timing)" in summary
