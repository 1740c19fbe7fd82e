"""The run's headline numbers as one JSON file, so `dvc metrics show` / `dvc metrics diff` compare
runs and commits: decay timing and PCA explained variance (means across seeds), the Section 2
claims' verdicts (each on the paper's claim as the paper states it, so a dashboard counting
supported claims counts agreement with the paper) and the toy checks' verdicts.

DVC reads metrics only from JSON, YAML or TOML, not from the CSV tables that hold the results;
this file repeats their key columns (the tables stay the source).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lrdecay import io

TIMING_COLUMNS = ("subpath_final_test_loss", "main_test_loss_at_total_epoch",
                  "decay_gain_vs_main_same_epoch")


def _number(value: object) -> float | None:
    """A JSON number (NaN and infinities become null, which JSON lacks)."""
    number = float(value)
    return number if math.isfinite(number) else None


VERDICT_CODE = {"supported": 1, "inconclusive": 0, "contradicted": -1}  # DVC metrics are numbers


def _timing_by_branch(decay_timing: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Branch epoch -> headline columns: the mean across seeds of the run's table (tidy, from
    lrdecay.analysis.aggregate_decay_timing), or the values of one seed's table (wide)."""
    if "quantity" in decay_timing:
        return {int(branch): dict(zip(group["quantity"], group["mean"], strict=True))
                for branch, group in decay_timing.groupby("branch_epoch")}
    return {int(row["branch_epoch"]): row for row in decay_timing.to_dict("records")}


def summarise(decay_timing: pd.DataFrame, variance: pd.DataFrame | Sequence[pd.DataFrame],
              toy_checks: pd.DataFrame | None = None, claims: pd.DataFrame | None = None) -> dict:
    """Nested dict of the run's headline numbers (DVC flattens it to `section.key` columns);
    with several seeds, means across seeds (each seed's PCA in `variance`)."""
    out: dict = {"decay_timing": {}, "pca": {}}
    for branch, row in sorted(_timing_by_branch(decay_timing).items()):
        out["decay_timing"][f"decay_at_{branch:04d}"] = {
            column: _number(row[column]) for column in TIMING_COLUMNS if column in row}
    tables = [variance] if isinstance(variance, pd.DataFrame) else list(variance)
    ratios = pd.concat(tables).groupby("component")["explained_variance_ratio"].mean().tolist()
    out["pca"] = {f"pc{i}_variance_ratio": _number(r) for i, r in enumerate(ratios, start=1)}
    out["pca"]["pc1_pc2_variance_ratio"] = _number(sum(ratios[:2]))
    if claims is not None:  # on the paper's claim as stated: 1 holds, 0 inconclusive, -1 not
        out["claims"] = {row.claim: {"value": _number(row.value),
                                     "verdict": VERDICT_CODE[row.verdict]}
                         for row in claims.itertuples(index=False)}
    if toy_checks is not None:
        checks = {f"{row['check']}@gamma={row['gamma']:g}": {
            "measured": _number(row["measured"]), "pass": int(bool(row["pass"]))}
            for row in toy_checks.to_dict("records")}
        passed = sum(c["pass"] for c in checks.values())
        out["toy_checks"] = {"passed": passed, "failed": len(checks) - passed, **checks}
    return out


def write(decay_timing: str | Path, variance: Sequence[str | Path],
          toy_checks: str | Path | None, out_path: str | Path,
          claims: str | Path | None = None) -> dict:
    """Read the result tables (`variance`: each seed's PCA table), write the summary atomically
    (stable key order and formatting)."""
    summary = summarise(pd.read_csv(decay_timing), [pd.read_csv(p) for p in variance],
                        pd.read_csv(toy_checks) if toy_checks else None,
                        pd.read_csv(claims) if claims else None)
    io.write_text(out_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
