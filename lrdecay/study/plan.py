"""The study plan: epochs, jobs and file layout of a validated config, and what each job reads.

Everything that turns a config into epochs, jobs and paths lives in :class:`Plan`, so the Snakemake
rules, the package and the tests agree on one layout. Job code imports this module, not
lrdecay.config.validate (which re-exports all of it, and adds the validation, the registries and the
resource model that jobs have no use for).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lrdecay.core.basics import ConfigError, config_hash
from lrdecay.study import layout

# The flipped training indices of data.label_noise, beside the dataset (lrdecay.training.data
# writes)
FLIPPED_NAME = "flipped.npy"
# engine settings that change numbers (the others change only speed and bookkeeping)
NUMERIC_ENGINE_KEYS = ("tf32", "channels_last", "compile", "bf16", "batched_subpaths")
# Where outputs go: in a job's params (its paths) but changing no number, so no hash covers them.
LAYOUT_KEYS = ("output_dir", "run_name", "main_path_dir")
# The rule param holding a declaration's values (Reads.values); lrdecay.tooling.dvcgen lists its
# keys as the stage's DVC params.
READS_PARAM = "reads"
# Keys added after results existed (new features), each -> the schema default that keeps what
# those results computed; tests/test_config.py checks they agree with the schema. At that value a
# key is left out of every declaration's values (rule params, DVC params, resume and result
# hashes) and put back by job_config, so adding a feature reruns no job and changes no record of
# a study that does not use it. The one place to register such a key.
LATER_DEFAULTS: dict[str, Any] = {
    "data.label_noise": 0.0,  # issue 25: labels as given
    "schedule.warmup_epochs": 0,  # issue 24: no warm-up
    "schedule.decay": {"shape": "step", "epochs": 0},  # issue 24: the paper's step decay
    "optimizer.name": "sgd",  # issue 24: the paper's SGD
    "optimizer.betas": [0.9, 0.999],  # issue 24: AdamW's, unread by SGD
    "optimizer.eps": 1e-8,  # issue 24: AdamW's, unread by SGD
    "main_path_dir": None,  # issue 24: a run's own main path (a sweep point's: shared)
    "model.width": 64,  # issue 25: resnet18's base channels, unread by the other models
    "landscape.bn_stats": "recompute",  # issue 25: batch norm models only
    "landscape.bn_samples": 1000,  # issue 25: batch norm models only
}


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


def engine_run(config: dict) -> dict:
    """The engine settings of how to run, not what to compute (threads, checkpoint interval,
    cuDNN algorithm search; like --cores, threads change only the last digits on CPU). A job
    reads them from the run's config, the one thing a job script may read from it
    (tests/test_workflow.py checks), so moving to a machine with more cores does not rerun days
    of training."""
    return {key: value for key, value in config["engine"].items()
            if key not in NUMERIC_ENGINE_KEYS}


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    """Dotted names of a nested mapping's leaves (`{"optimizer": {"subpath_lr": 1}}` gives
    `optimizer.subpath_lr`)."""
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys += leaf_keys(value, f"{name}.") if isinstance(value, dict) else [name]
    return keys


def override_note(overrides: dict, run_dir: Path) -> str | None:
    """The warning for `--config` overrides of what to compute that keep the preset's
    run_name: their jobs rerun in the preset's folder and replace its results there, which a
    user trying one value rarely means. None where nothing is replaced: a new run_name or
    output_dir, added seeds, run settings (:func:`engine_run`)."""
    if not overrides or set(overrides) & set(LAYOUT_KEYS):
        return None
    changed = [key for key in leaf_keys(overrides) if key != "seeds" and not (
        key.startswith("engine.") and key.split(".")[1] not in NUMERIC_ENGINE_KEYS)]
    if not changed:
        return None
    return (f"--config sets {', '.join(sorted(changed))} for the run in {run_dir} (run_name "
            f"'{run_dir.name}'): the jobs these settings change rerun there and replace the "
            "results computed with the preset's values. To keep both, add run_name=<new name> "
            "(or output_dir=<another folder>) to --config.")


def job_config(params: Any, run: dict | None = None, reads: Reads | None = None) -> dict:
    """A job's config rebuilt from its rule's params (`seed` and a declaration's
    :meth:`Reads.values`) and the run settings (:func:`engine_run`): jobs never read the rest of
    the Snakemake config, so what changes their numbers is what their rule declares. With the
    stage's declaration `reads`, the later-added keys it declares that the params leave out at
    their default (LATER_DEFAULTS) are put back, and params that are not that declaration's are
    refused (a script handed another stage's params)."""
    params = dict(params.items())  # a dict, or Snakemake's params (a named list)
    config: dict = {"seed": int(params["seed"])}
    for key, value in params[READS_PARAM].items():
        section, _, sub = key.partition(".")
        if sub:
            config.setdefault(section, {})[sub] = copy.deepcopy(value)
        else:
            config[section] = copy.deepcopy(value)
    config["engine"] = {**(run or {}), **config.get("engine", {})}
    if reads is not None:
        given = set(params[READS_PARAM])
        if not given <= set(reads.keys) or not set(reads.keys) - set(LATER_DEFAULTS) <= given:
            raise ConfigError(f"the job's params declare {sorted(given)}, not its stage's "
                              f"keys {sorted(reads.keys)}: the rule and its script disagree")
        for key, value in LATER_DEFAULTS.items():
            section, _, sub = key.partition(".")
            if not sub and key in reads.keys:  # a top-level key (main_path_dir)
                config.setdefault(key, copy.deepcopy(value))
            elif key in reads.keys or section in reads.keys:
                config.setdefault(section, {}).setdefault(sub, copy.deepcopy(value))
    return config


def with_later_defaults(section: str, values: dict) -> dict:
    """A config section's `values` (as a rule's params hold them) with each later-added key of it
    that they leave out (LATER_DEFAULTS) put back at its default: what a job reading the whole
    section, such as prepare_data, computes with."""
    out = copy.deepcopy(dict(values))
    for key, value in LATER_DEFAULTS.items():
        name, _, sub = key.partition(".")
        if name == section:
            out.setdefault(sub, copy.deepcopy(value))
    return out


def at_later_default(key: str, value: Any) -> bool:
    """Whether `key` is a later-added key (LATER_DEFAULTS) at the default that keeps old results."""
    return key in LATER_DEFAULTS and canonical(value) == canonical(LATER_DEFAULTS[key])


@dataclass(frozen=True)
class Reads:
    """The config keys one stage's jobs read, declared once: its rule's params (each a rerun
    trigger, and the DVC params of its stages, lrdecay.tooling.dvcgen), the job's whole config
    (:meth:`narrow`) and its resume and result hash (:meth:`hash`). A key is a section
    ("data") or one key of it ("optimizer.main_lr"); a key a stage does not declare is not in
    its job's config, so reading it fails instead of making the job depend on it unseen."""

    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        whole = {key for key in self.keys if "." not in key}
        both = sorted(key for key in self.keys if key.partition(".")[0] in whole and "." in key)
        if both or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"declared twice (as a section and a key of it, or repeated): "
                             f"{both or self.keys}")

    def plus(self, *keys: str) -> Reads:
        """This declaration and `keys` (a later stage reading what an earlier one read)."""
        return Reads(tuple(sorted({*self.keys, *keys})))

    def values(self, config: dict) -> dict[str, Any]:
        """Each declared key -> its value in `config` (a run's or a job's), as the rule's
        `reads` param: keys sorted, mappings canonical, so reordering a YAML file reruns
        nothing. A later-added key at its default (LATER_DEFAULTS) is left out, also inside a
        declared section, so old params and hashes stay as they were."""
        out = {}
        for key in sorted(self.keys):
            section, _, sub = key.partition(".")
            if not sub and section not in config and section in LATER_DEFAULTS:
                continue  # a config from before the key existed: at its default
            value = config[section][sub] if sub else config[section]
            if at_later_default(key, value):  # e.g. optimizer.name, main_path_dir
                continue
            if not sub and isinstance(value, dict):
                value = {k: v for k, v in value.items()
                         if not at_later_default(f"{section}.{k}", v)}
            out[key] = canonical(value)
        return out

    def narrow(self, config: dict) -> dict:
        """`config` (a seed's, e.g. a test's full one) cut to what this stage reads, plus the
        seed and the run settings: what its job sees under Snakemake, wherever it is called."""
        return job_config({"seed": config["seed"], READS_PARAM: self.values(config)},
                          engine_run(config), self)

    def hash(self, config: dict) -> str:
        """Hash of the declared values that change numbers (not where outputs go), with the
        seed: a resume state or result is reused only by the same declaration's values."""
        values = {key: value for key, value in self.values(config).items()
                  if key not in LAYOUT_KEYS}
        return config_hash({"seed": int(config["seed"]), **values})


# What each stage reads. The main path reads no subpath-only key, so an ablation of one of them
# (another decay lr, longer subpaths, another grouping or engine for them) retrains only the
# subpaths and what follows them; tests/test_ablation.py checks it under Snakemake and DVC.
MAIN_PATH = Reads((
    "device", "data", "model", "loss", "metrics", "trajectory", *LAYOUT_KEYS,
    "optimizer.main_lr", "optimizer.momentum", "optimizer.weight_decay",
    "optimizer.batch_size", "optimizer.name", "optimizer.betas", "optimizer.eps",
    # the segment ends and the branch epochs whose states the segments save
    "schedule.main_epochs", "schedule.segment_epochs", "schedule.first_branch_epoch",
    "schedule.branch_interval", "schedule.last_branch_epoch", "schedule.warmup_epochs",
    *(f"engine.{key}" for key in NUMERIC_ENGINE_KEYS if key != "batched_subpaths"),
))
SUBPATH_KEYS = ("optimizer.subpath_lr", "schedule.subpath_epochs", "schedule.subpaths_per_job",
                "schedule.decay", "engine.batched_subpaths")
# A subpath starts from a main-path state, so its hash covers the main path's keys too: every
# key of the training sections (tests/test_ablation.py checks none is left out).
SUBPATHS = MAIN_PATH.plus(*SUBPATH_KEYS)
TRAINING = SUBPATHS  # what any training result depends on (the trajectories, their PCA)
PCA = TRAINING.plus("pca")
LANDSCAPE = TRAINING.plus("landscape")
SHARPNESS = TRAINING.plus("sharpness")
DATA = Reads(("data",))  # prepare_data: the dataset file every seed of a run shares
CLAIMS = Reads(("optimizer.weight_decay",))  # stated beside the norm row (lrdecay.analysis.claims)


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
        return self.seed_dir() / layout.RESUME

    def segment_work(self, end: int) -> Path:
        """The resume folder of the main_segment job ending at `end` (named like its log)."""
        return self.resume_dir / layout.SEGMENT_JOB.name(end)

    def group_work(self, group: int) -> Path:
        """The resume folder of subpath_group job `group` (named like its log)."""
        return self.resume_dir / layout.GROUP_JOB.name(group)

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

    # File layout (Snakemake rules and jobs both use these, so they cannot disagree; the names
    # are lrdecay.study.layout's). A number given as its braced wildcard ("{end}") gives the rule's
    # pattern; `seed` ("{seed}" too) names the seed of a run's plan.
    @property
    def data_path(self) -> Path:
        return self.run_dir / "data" / "dataset.pt"

    @property
    def flipped_path(self) -> Path:
        """The flipped training indices of data.label_noise (lrdecay.training.data.flipped_path)."""
        return self.data_path.with_name(FLIPPED_NAME)

    @property
    def main_run_dir(self) -> Path:
        """The run folder holding this run's main path: its own, or for a sweep point
        (lrdecay.config.sweep) the main path it shares with the points that differ from it only in
        subpath keys (config key main_path_dir)."""
        shared = self.config.get("main_path_dir")
        return self.run_dir if shared is None else Path(shared)

    def segment_dir(self, end: int | str, seed: int | str | None = None) -> Path:
        return self.main_run_dir / self.seed_dir(seed).name / layout.SEGMENT.name(end)

    def branch_state(self, branch_epoch: int) -> Path:
        """Checkpoint holding the main path's full state at `branch_epoch`."""
        end = self.segment_holding(branch_epoch)
        name = layout.STATE if end == branch_epoch else layout.BRANCH_STATE.name(branch_epoch)
        return self.segment_dir(end) / name

    def group_dir(self, group: int | str, seed: int | str | None = None) -> Path:
        return self.seed_dir(seed) / layout.GROUP.name(group)

    def subpath_weights(self, group: int, branch_epoch: int) -> Path:
        """A subpath's final weights at full precision (its snapshots may be float16)."""
        return self.group_dir(group) / layout.BRANCH_WEIGHTS.name(branch_epoch)

    def shard_path(self, shard: int | str, seed: int | str | None = None) -> Path:
        """One landscape shard job's table of grid points."""
        return self.seed_dir(seed) / layout.SHARD.name(shard)

