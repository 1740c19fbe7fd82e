"""The run's numbers as JSON, for `dvc metrics show` / `dvc metrics diff` across runs and commits.

Two files. `summary.json` is the full record: decay timing per branch epoch and PCA explained
variance (means across seeds), each Section 2 claim's value and verdict (on the paper's claim as
the paper states it, so a dashboard counting supported claims counts agreement with the paper)
and every toy check. `headline.json` holds the few numbers a reader looks at first, and is the
one file the pipeline declares as DVC metrics: DVC prints a row per file and a column per number,
so the full record (about 190 numbers) made `dvc metrics show` a row 10,000 characters wide. The
rest is read as tables (claims.csv, toy/checks.csv) and DVC plots (lrdecay.tooling.dvcgen), or with
`dvc metrics show <run>/summary.json`.

DVC reads metrics only from JSON, YAML or TOML, not from the CSV tables that hold the results;
these files repeat their key columns (the tables stay the source).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lrdecay.core import io

TIMING_COLUMNS = ("subpath_final_test_loss", "main_test_loss_at_total_epoch",
                  "decay_gain_vs_main_same_epoch")


def _number(value: object) -> float | None:
    """A JSON number (NaN and infinities become null, which JSON lacks)."""
    number = float(value)
    return number if math.isfinite(number) else None


VERDICT_CODE = {"supported": 1, "inconclusive": 0, "contradicted": -1}  # DVC metrics are numbers


def _timing_by_branch(decay_timing: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Branch epoch -> headline columns: the mean across seeds of the run's table (tidy, from
    lrdecay.analysis.claims.aggregate_decay_timing), or the values of one seed's table (wide)."""
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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def headline(summary: dict) -> dict:
    """The few numbers `dvc metrics show` prints, flat and with short keys so its one row fits a
    terminal (about 130 columns; DVC sorts the keys): the decay epoch with the lowest final test
    loss and that loss, the mean gain of decaying over training on at the large rate for the
    same total epochs, PC1 + PC2's share of the variance, and how many claims the run supports
    and contradicts and toy checks fail. None (JSON null) where the run has no such number."""
    timing = {int(key.removeprefix("decay_at_")): row
              for key, row in summary.get("decay_timing", {}).items()}
    losses = {branch: row["subpath_final_test_loss"] for branch, row in timing.items()
              if row.get("subpath_final_test_loss") is not None}
    best = min(losses, key=lambda branch: (losses[branch], branch)) if losses else None
    gains = [row["decay_gain_vs_main_same_epoch"] for row in timing.values()
             if row.get("decay_gain_vs_main_same_epoch") is not None]
    verdicts = [claim["verdict"] for claim in summary.get("claims", {}).values()]
    toy = summary.get("toy_checks")
    return {
        "best_decay_epoch": best,
        "best_test_loss": None if best is None else losses[best],
        "decay_gain": _mean(gains),
        "pc1_pc2": summary.get("pca", {}).get("pc1_pc2_variance_ratio"),
        "supported": verdicts.count(VERDICT_CODE["supported"]) if "claims" in summary else None,
        "contradicted": (verdicts.count(VERDICT_CODE["contradicted"]) if "claims" in summary
                         else None),
        "toy_failed": None if toy is None else toy["failed"],
    }


def _dump(path: str | Path, content: dict) -> None:
    """Atomically, with stable key order and formatting (DVC compares the files by hash)."""
    io.write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def write(decay_timing: str | Path, variance: Sequence[str | Path],
          toy_checks: str | Path | None, out_path: str | Path,
          claims: str | Path | None = None, headline_path: str | Path | None = None) -> dict:
    """Read the result tables (`variance`: each seed's PCA table), write the summary (and, given
    `headline_path`, its headline) atomically."""
    summary = summarise(pd.read_csv(decay_timing), [pd.read_csv(p) for p in variance],
                        pd.read_csv(toy_checks) if toy_checks else None,
                        pd.read_csv(claims) if claims else None)
    _dump(out_path, summary)
    if headline_path is not None:
        _dump(headline_path, headline(summary))
    return summary
