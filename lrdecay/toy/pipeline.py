"""Job entry points of the toy rules (workflow/scripts/toy_*.py call these)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import lrdecay
from lrdecay.config import config_hash
from lrdecay.io import atomic_path, write_csv, write_json
from lrdecay.toy import checks, figures


def provenance(toy: dict) -> dict:
    return {"config_hash": config_hash(toy), "seed": toy["seed"],
            "lrdecay_version": lrdecay.__version__}


def run_checks(toy: dict, gamma: float, instance_path: str, table_path: str,
               traces_path: str) -> None:
    """Simulate one gamma; write the instance (.npz + .json), its table rows and its traces.

    `toy` is a validated section (lrdecay.config.validate checked it once per run)."""
    inst, rows, traces = checks.run_gamma(toy, gamma)
    meta = provenance(toy)
    inst.save(instance_path)
    write_json(str(instance_path) + ".json", {**inst.to_dict(), **meta,
                                              "instance_file": Path(instance_path).name})
    frame = pd.DataFrame(rows)
    for key, value in meta.items():
        frame[key] = value
    frame["instance_file"] = Path(instance_path).name
    write_csv(table_path, frame)
    traces.update({"X": inst.X, "w_star": inst.w_star, "norm_dagger": inst.norm_dagger,
                   "test_loss_dagger": inst.test_loss_dagger, "eta": toy["eta_large"],
                   "provenance": json.dumps(meta)})
    with atomic_path(traces_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k: np.asarray(v) for k, v in traces.items()})


def build_table(inputs: list[str], output: str) -> pd.DataFrame:
    """Concatenate the per-gamma tables into the tidy checks table."""
    frame = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True)
    write_csv(output, frame)
    return frame


def load_traces(paths: list[str]) -> dict[float, dict]:
    out = {}
    for p in paths:
        with np.load(p) as data:
            tr = {k: data[k] for k in data.files}
        out[_gamma_of(p)] = tr
    return out


def _gamma_of(path: str) -> float:
    return float(Path(path).parent.name.split("-", 1)[1])


def make_figures(toy: dict, traces_paths: list[str], outputs: dict[str, str]) -> None:
    """Figure 4 and the extra figures from the per-gamma traces."""
    traces = load_traces(traces_paths)
    figures.figure4(outputs["fig4_png"], outputs["fig4_pdf"], traces, toy)
    figures.norm_vs_ode(outputs["norm_png"], outputs["norm_pdf"], traces)
    figures.phases(outputs["phases_png"], outputs["phases_pdf"], traces)
    figures.late_decay(outputs["decay_png"], outputs["decay_pdf"], traces)
