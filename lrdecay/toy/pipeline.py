"""Job entry points of the toy simulation rules (toy_checks, toy_table); the figure jobs' entry
points live with the drawing code, in lrdecay.toy.figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import lrdecay
from lrdecay.core.basics import config_hash
from lrdecay.core.io import atomic_path, write_csv, write_json
from lrdecay.toy import checks


def provenance(toy: dict) -> dict:
    return {"config_hash": config_hash(toy), "seed": toy["seed"],
            "lrdecay_version": lrdecay.__version__}


def run_checks(toy: dict, gamma: float, instance_path: str, table_path: str,
               traces_path: str) -> None:
    """Simulate one gamma; write the instance (.npz + .json), its table rows and its traces.

    `toy` is a validated section (lrdecay.config.validate.validate checked it once per run)."""
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
