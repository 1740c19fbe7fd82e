"""Configuration: schema validation with readable errors, cross-field checks, and the study plan.

The schema (workflow/schemas/config.schema.yaml) is the single source of defaults and documentation.
Everything that turns a config into epochs, jobs and paths lives in :class:`Plan`, so the Snakemake
rules, the package and the tests agree on one layout.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TOY_SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "toy.schema.yaml"

# Per-class sizes of each dataset's train and test pools (see lrdecay.data for how digits is split).
DATASET_POOL_PER_CLASS = {
    "digits": {"train": 104, "test": 70},
    "cifar10": {"train": 5000, "test": 1000},
}


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def _key_path(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error.absolute_path)
    rule, bound = error.validator, error.validator_value
    allowed = {
        "exclusiveMinimum": f"must be > {bound}",
        "minimum": f"must be >= {bound}",
        "exclusiveMaximum": f"must be < {bound}",
        "maximum": f"must be <= {bound}",
        "enum": f"must be one of {bound}",
        "type": f"must be of type {bound}",
        "minItems": f"needs at least {bound} items",
        "maxItems": f"takes at most {bound} items",
        "pattern": f"must match {bound}",
        "minLength": f"must have at least {bound} characters",
    }.get(rule)
    if rule == "additionalProperties":
        return f"config key {key}: {error.message} (see workflow/schemas/config.schema.yaml)"
    if key.startswith("landscape.points") and rule == "minimum":
        allowed = "a grid needs at least 2 points a side"
    return f"config key {key} = {error.instance!r}: {allowed or error.message}"


def _load_yaml(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _fill_defaults(schema: dict, instance: dict) -> None:
    """Insert the schema's defaults recursively (objects first, then their properties)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def _check_against(schema_path: Path, instance: dict, prefix: str = "") -> None:
    schema = _load_yaml(schema_path)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        lines = [_describe(e) for e in errors]
        if prefix:
            lines = [line.replace("config key ", f"config key {prefix}", 1) for line in lines]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(schema, instance)


def validate(config: dict) -> dict:
    """Validate `config` in place (schema, defaults, cross-field rules) and return it.

    Called by the Snakefile before any job is planned, and by every job's entry point, so a bad
    value stops the run with a message instead of failing deep inside training.
    """
    _check_against(SCHEMA_PATH, config)
    if TOY_SCHEMA_PATH.exists():
        _check_against(TOY_SCHEMA_PATH, config["toy"], prefix="toy.")
    check_semantics(config)
    return config


def check_semantics(config: dict) -> None:
    """Rules that span several keys."""
    sched = config["schedule"]
    problems = []
    last = sched["last_branch_epoch"]
    main = sched["main_epochs"]
    if sched["first_branch_epoch"] > main:
        problems.append(
            f"config key schedule.first_branch_epoch = {sched['first_branch_epoch']}: must be <= "
            f"schedule.main_epochs = {main} (a subpath branches from the main path)"
        )
    if last is not None and last > main:
        problems.append(
            f"config key schedule.last_branch_epoch = {last}: must be <= schedule.main_epochs = "
            f"{main}"
        )
    if last is not None and last < sched["first_branch_epoch"]:
        problems.append(
            f"config key schedule.last_branch_epoch = {last}: must be >= "
            f"schedule.first_branch_epoch = {sched['first_branch_epoch']}"
        )
    data = config["data"]
    pools = DATASET_POOL_PER_CLASS[data["name"]]
    for split in ("train", "test"):
        wanted = data[f"{split}_per_class"]
        if wanted is not None and wanted > pools[split]:
            problems.append(
                f"config key data.{split}_per_class = {wanted}: {data['name']} has only "
                f"{pools[split]} {split} images per class; use at most {pools[split]} or null (all)"
            )
    if data["augment"] and data["name"] == "digits":
        problems.append(
            "config key data.augment = True: random crops and flips are for CIFAR images; "
            "set it to false for digits"
        )
    model = config["model"]["name"]
    if model.startswith("vgg") and data["name"] != "cifar10":
        problems.append(
            f"config key model.name = {model!r}: VGG models need 32x32 colour images "
            "(data.name: cifar10); use mlp for digits"
        )
    land = config["landscape"]
    if land["range"] == "explicit":
        for axis in ("pc1", "pc2"):
            low, high = land[axis]
            if not low < high:
                problems.append(f"config key landscape.{axis} = {land[axis]}: needs low < high")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def load(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Read YAML configs (later ones override earlier keys, as Snakemake merges) and validate."""
    config: dict = {}
    for path in paths:
        _deep_update(config, _load_yaml(Path(path)) or {})
    _deep_update(config, overrides or {})
    return validate(config)


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def config_hash(section: Any) -> str:
    """Short stable hash of (part of) a config, recorded in result files for provenance."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


TRAINING_SECTIONS = ("seed", "device", "data", "model", "loss", "optimizer", "schedule", "metrics",
                     "trajectory")
NUMERIC_ENGINE_KEYS = ("tf32", "channels_last", "compile", "bf16", "batched_subpaths")


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
    def resume_dir(self) -> Path:
        """Partial training state; never a Snakemake output, so a failed job's cleanup keeps it."""
        return self.run_dir / ".resume"

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
        return self.run_dir / "main" / f"segment-{end:04d}"

    def branch_state(self, branch_epoch: int) -> Path:
        """Checkpoint holding the main path's full state at `branch_epoch`."""
        end = self.segment_holding(branch_epoch)
        name = "state.pt" if end == branch_epoch else f"branch-{branch_epoch:04d}.pt"
        return self.segment_dir(end) / name

    def group_dir(self, group: int) -> Path:
        return self.run_dir / "subpaths" / f"group-{group:03d}"

    def group_of(self, branch_epoch: int) -> int:
        return next(i for i, g in enumerate(self.subpath_groups) if branch_epoch in g)
