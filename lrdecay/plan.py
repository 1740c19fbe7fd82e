"""The study plan: epochs, jobs and file layout of a validated config, and what each job reads.

Everything that turns a config into epochs, jobs and paths lives in :class:`Plan`, so the Snakemake
rules, the package and the tests agree on one layout. Job code imports this module, not
lrdecay.config (which re-exports all of it): the validation's registries and resource model are
then no code dependency of the jobs under DVC (lrdecay.dvcgen follows imports), so editing, say,
the memory requests does not retrain anything.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lrdecay.basics import ConfigError, config_hash

# The config sections a training job's numbers depend on: its Snakemake params (a change reruns
# it; also dvc.yaml's params) and the training hash its results and resume states carry. `seed` is
# a training job's own seed (for_seed), not a section of the run's config.
TRAINING_SECTIONS = ("seed", "device", "data", "model", "loss", "optimizer", "schedule", "metrics",
                     "trajectory")
# A subpath's final weights in its group folder (lrdecay.subpaths writes, lrdecay.sharpness reads)
SUBPATH_WEIGHTS = "branch-{branch:04d}.weights.pt"
# engine settings that change numbers (the others change only speed and bookkeeping)
NUMERIC_ENGINE_KEYS = ("tf32", "channels_last", "compile", "bf16", "batched_subpaths")


def for_seed(config: dict, seed: int) -> dict:
    """The config one seed's jobs see: `seed` a scalar and no `seeds` list, so adding a seed to
    the run changes nothing a seed's jobs read (their params, training hash and paths)."""
    if seed not in config.get("seeds", [seed]):
        raise ConfigError(f"seed {seed} is not in config key seeds = {config['seeds']}")
    out = {key: copy.deepcopy(value) for key, value in config.items() if key != "seeds"}
    out["seed"] = int(seed)
    return out


def canonical(value: Any) -> Any:
    """`value` with every mapping's keys sorted: Snakemake compares a job's params with the last
    run's in order, so keys reordered in a YAML file (or a default filled in another place)
    would otherwise rerun the job."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def job_params(config: dict, seed: int, sections: tuple[str, ...] = ()) -> dict:
    """What a training-type job reads, as its rule's params (each a rerun trigger): the training
    sections (and `sections`) of the seed's config, the engine settings that change numbers
    (`engine`, also dvc.yaml params), and the run folder (`layout`). The settings of how to run
    (:func:`engine_run`) are not params, so changing them reruns nothing.
    :func:`job_config` rebuilds the job's config from both."""
    seeded = for_seed(config, seed)
    return canonical({
        "seed": seeded["seed"],
        "training": {key: seeded[key] for key in (*TRAINING_SECTIONS, *sections) if key != "seed"},
        "engine": {key: seeded["engine"][key] for key in NUMERIC_ENGINE_KEYS},
        "layout": {key: seeded[key] for key in ("output_dir", "run_name")},
    })


def engine_run(config: dict) -> dict:
    """The engine settings of how to run, not what to compute (threads, checkpoint interval,
    cuDNN algorithm search; like --cores, threads change only the last digits on CPU). A job
    reads them from the run's config, the one thing a job script may read from it
    (tests/test_workflow.py checks), so moving to a machine with more cores does not rerun days
    of training."""
    return {key: value for key, value in config["engine"].items()
            if key not in NUMERIC_ENGINE_KEYS}


def job_config(params: Any, run: dict | None = None) -> dict:
    """A job's config rebuilt from its rule's params (:func:`job_params`) and the run settings
    (:func:`engine_run`): jobs never read the rest of the Snakemake config, so what changes their
    numbers is what their rule declares."""
    params = dict(params.items())  # a dict, or Snakemake's params (a named list)
    return {**params.get("layout", {}), **params["training"], "seed": int(params["seed"]),
            "engine": {**(run or {}), **params["engine"]}}


def training_hash(config: dict) -> str:
    """Hash of everything that changes a training path's numbers (not where outputs go, nor how
    often state is saved), so results and resume states stay valid across output folders."""
    section = {key: config[key] for key in TRAINING_SECTIONS}
    section["engine"] = {key: config["engine"][key] for key in NUMERIC_ENGINE_KEYS}
    return config_hash(section)


@dataclass(frozen=True)
class Plan:
    """Epochs, jobs and file layout derived from a validated config."""

    config: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.config["output_dir"]) / self.config["run_name"]

    @property
    def seeds(self) -> list[int]:
        """The run's training seeds (a seed's config, from for_seed, has just its own)."""
        return list(self.config["seeds"]) if "seeds" in self.config else [self.config["seed"]]

    def for_seed(self, seed: int) -> Plan:
        """The plan of one seed's jobs (its config from :func:`for_seed`)."""
        return Plan(for_seed(self.config, seed))

    def seed_dir(self, seed: int | str | None = None) -> Path:
        """<run>/seed-<s>/: one seed's whole study (training, trajectories, tables, PCA,
        landscape). Without `seed`: this config's own seed (a seed's config, from for_seed);
        a string such as "{seed}" gives a Snakemake pattern."""
        if seed is None:
            if "seed" not in self.config:
                raise ValueError("this is a run's config (seeds: a list); use "
                                 "Plan.for_seed(seed) or seed_dir(seed) for one seed's files")
            seed = self.config["seed"]
        return self.run_dir / f"seed-{seed}"

    @property
    def resume_dir(self) -> Path:
        """Partial training state of this seed; never a Snakemake output, so a failed job's
        cleanup keeps it."""
        return self.seed_dir() / ".resume"

    @cached_property
    def branch_epochs(self) -> list[int]:
        s = self.config["schedule"]
        last = s["main_epochs"] if s["last_branch_epoch"] is None else s["last_branch_epoch"]
        return list(range(s["first_branch_epoch"], last + 1, s["branch_interval"]))

    @cached_property
    def segment_ends(self) -> list[int]:
        """End epochs of the main-path segment jobs (epoch 0 is the initial state job)."""
        s = self.config["schedule"]
        step, main = s["segment_epochs"], s["main_epochs"]
        return sorted({*range(step, main, step), main})

    def segment_start(self, end: int) -> int:
        index = self.segment_ends.index(end)
        return 0 if index == 0 else self.segment_ends[index - 1]

    def segment_holding(self, epoch: int) -> int:
        """End of the segment whose job writes the main-path state at `epoch` (0: the init job)."""
        if epoch == 0:
            return 0
        return next(end for end in self.segment_ends if end >= epoch)

    def branches_in_segment(self, end: int) -> list[int]:
        start = self.segment_start(end)
        return [b for b in self.branch_epochs if start < b <= end]

    @cached_property
    def subpath_groups(self) -> list[list[int]]:
        k = self.config["schedule"]["subpaths_per_job"]
        epochs = self.branch_epochs
        return [epochs[i : i + k] for i in range(0, len(epochs), k)]

    @property
    def grid_points(self) -> int:
        nx, ny = self.config["landscape"]["points"]
        return nx * ny

    @property
    def n_shards(self) -> int:
        return min(self.config["landscape"]["shards"], self.grid_points)

    # File layout (Snakemake rules and jobs both use these, so they cannot disagree).
    @property
    def data_path(self) -> Path:
        return self.run_dir / "data" / "dataset.pt"

    def segment_dir(self, end: int) -> Path:
        return self.seed_dir() / "main" / f"segment-{end:04d}"

    def branch_state(self, branch_epoch: int) -> Path:
        """Checkpoint holding the main path's full state at `branch_epoch`."""
        end = self.segment_holding(branch_epoch)
        name = "state.pt" if end == branch_epoch else f"branch-{branch_epoch:04d}.pt"
        return self.segment_dir(end) / name

    def group_dir(self, group: int) -> Path:
        return self.seed_dir() / "subpaths" / f"group-{group:03d}"

    def subpath_weights(self, group: int, branch_epoch: int) -> Path:
        """A subpath's final weights at full precision (its snapshots may be float16)."""
        return self.group_dir(group) / SUBPATH_WEIGHTS.format(branch=branch_epoch)

