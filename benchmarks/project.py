"""Project the whole study's wall time on one device from measured per-model-epoch times.

The main path is one model trained epoch after epoch (its segments run one after another); the
subpaths run in groups of schedule.subpaths_per_job, K at once, groups one after another.
Run: .venv/bin/python -m benchmarks.project <results.json>  (as written by bench_gpu.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lrdecay.config import validate as lrconfig

REPO = Path(__file__).resolve().parents[1]


def study_shape(preset: str) -> dict:
    """Main epochs, number of subpaths, subpath epochs, K and the number of seeds of a preset
    (config/<preset>.yaml): each seed runs the whole study again."""
    config = lrconfig.load(REPO / "config" / f"{preset}.yaml")
    plan = lrconfig.Plan(config)
    sched = config["schedule"]
    return {"main_epochs": sched["main_epochs"], "subpaths": len(plan.branch_epochs),
            "subpath_epochs": sched["subpath_epochs"], "k": sched["subpaths_per_job"],
            "seeds": len(plan.seeds)}


def project(shape: dict, main_epoch_s: float, subpath_model_epoch_s: float) -> dict:
    """Wall seconds on one device: per seed, the main path sequential + every subpath model-epoch
    at the batched rate; the seeds one after another (`seeds` of `shape`, 1 if absent)."""
    seeds = shape.get("seeds", 1)
    main = shape["main_epochs"] * main_epoch_s
    subpaths = shape["subpaths"] * shape["subpath_epochs"] * subpath_model_epoch_s
    model_epochs = shape["main_epochs"] + shape["subpaths"] * shape["subpath_epochs"]
    per_seed = main + subpaths
    return {"seeds": seeds, "model_epochs_per_seed": model_epochs,
            "model_epochs": model_epochs * seeds, "main_s": main, "subpaths_s": subpaths,
            "per_seed_s": per_seed, "per_seed_min": per_seed / 60,
            "total_s": per_seed * seeds, "total_min": per_seed * seeds / 60}


def main() -> None:
    measured = json.loads(Path(sys.argv[1]).read_text())
    for preset, times in measured["projection_inputs"].items():
        result = project(study_shape(preset), times["main_epoch_s"],
                         times["subpath_model_epoch_s"])
        print(f"{preset}: {result['model_epochs']} model-epochs over {result['seeds']} seed(s);"
              f" per seed main {result['main_s'] / 60:.1f} min + subpaths "
              f"{result['subpaths_s'] / 60:.1f} min = {result['per_seed_min']:.1f} min; all seeds "
              f"{result['total_min']:.1f} min")


if __name__ == "__main__":
    main()
