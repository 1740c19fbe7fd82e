"""Sweeps: a grid of settings run side by side, points that differ only in subpath keys sharing
one main path.

A config's `sweep:` maps config keys (dotted) to lists of values; the points are the product of
the lists, in the order written. Each point is a whole study in <run>/<point>/ (its config: the
run's with the point's values, run_name the point's name), whose Snakemake rules are the
Snakefile's, loaded once per point as a module (workflow/rules/sweep.smk). Which points share a
main path follows from what the main path reads (lrdecay.study.plan.MAIN_PATH, the main-path jobs'
params): points whose declared main-path values are equal share one, in <run>/<main>/, trained
once; their subpath jobs read its checkpoints (config key main_path_dir). Layout keys do not
count (they change no number). Everything here is checked before any job: a bad key, an empty
list or a point whose config the schema refuses stops the run naming the point and the key.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrdecay.core.basics import ConfigError
from lrdecay.study.plan import LAYOUT_KEYS, MAIN_PATH, canonical

SWEEP_KEY = "sweep"
TABLE = "sweep.csv"  # the run-level comparison table (lrdecay.analysis.comparison)
FIGURE = "sweep_decay_timing"  # figures/<FIGURE>.png|pdf: the comparison figure
MAIN_NAME = "main-path"  # the shared main path's folder (more than one: main-path,<keys>)
# Not sweepable: where outputs go (no number changes), the seeds (already a list the whole
# study runs over), the sweep itself, the toy model (a sweep runs the Section 2 study).
FORBIDDEN = (*LAYOUT_KEYS, "seeds", "seed", SWEEP_KEY, "toy")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.=,+-]+$")  # config key run_name's characters
MAX_NAME = 100


@dataclass(frozen=True)
class Point:
    """One point of the grid: its values, its folder's name, its whole config."""

    index: int
    name: str  # its folder in the run folder, e.g. subpath_lr=0.02,decay=linear-10
    values: tuple[tuple[str, Any], ...]  # (dotted key, value), in the sweep's key order
    config: dict  # the run's config with the point's values, validated
    main: str  # the folder of the main path it branches from

    @property
    def module(self) -> str:
        """Its Snakemake module (and rule-name prefix): point<i>_decay_timing, ..."""
        return f"point{self.index}"


@dataclass(frozen=True)
class MainPath:
    """One main path shared by the points that differ from each other only in subpath keys."""

    index: int
    name: str
    config: dict  # a point's config with run_name the main path's folder
    points: tuple[str, ...]

    @property
    def module(self) -> str:
        return f"main{self.index}"


@dataclass(frozen=True)
class Sweep:
    """The points of a run's `sweep:` and the main paths they share."""

    run_dir: Path
    keys: tuple[str, ...]
    points: tuple[Point, ...]
    mains: tuple[MainPath, ...]

    @property
    def table(self) -> Path:
        return self.run_dir / TABLE

    def figure(self, suffix: str) -> Path:
        return self.run_dir / "figures" / f"{FIGURE}.{suffix}"

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)


def _get(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _has(tree: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = copy.deepcopy(value)


def value_name(value: Any) -> str:
    """A value as it appears in a point's name: 0.02, linear-10 (a mapping's values, its shape
    or name first, then by key), 256x256 (a list)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        first = [k for k in ("shape", "name") if k in value]
        keys = first + sorted(k for k in value if k not in first)
        return "-".join(value_name(value[k]) for k in keys)
    if isinstance(value, list):
        return "x".join(value_name(v) for v in value)
    return str(value)


def shown_values(point: Point) -> dict[str, Any]:
    """A point's swept values as the comparison table shows them: numbers and strings as
    they are, mappings and lists by :func:`value_name` (linear-10)."""
    return {key: value if isinstance(value, (int, float, str)) else value_name(value)
            for key, value in point.values}


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's name in point names: its last part (subpath_lr), or the whole dotted key where
    two keys end alike."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (tail if last.count(tail) == 1 else key) for key, tail in zip(keys, last,
                                                                               strict=True)}


def reads_main_path(key: str) -> bool:
    """Whether the main path reads (part of) the swept `key` (lrdecay.study.plan.MAIN_PATH)."""
    return any(key == m or key.startswith(f"{m}.") or m.startswith(f"{key}.")
               for m in MAIN_PATH.keys)


def main_values(config: dict) -> str:
    """What a point's main path computes from: its declared values less the layout (a key of
    its own: points with equal keys share the main path)."""
    values = {k: v for k, v in MAIN_PATH.values(config).items() if k not in LAYOUT_KEYS}
    return json.dumps(canonical(values), sort_keys=True)


def _check_grid(config: dict) -> dict[str, list]:
    grid = config[SWEEP_KEY]
    where = "lrdecay/config/schemas/config.schema.yaml lists the keys"
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"config key sweep = {grid!r}: must map config keys (dotted, e.g. "
                          "optimizer.subpath_lr) to lists of values; remove it to run one study")
    for key, values in grid.items():
        name = f"config key sweep.{key}"
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{name}: a sweep key must be a dotted config key")
        top = key.split(".")[0]
        if top in FORBIDDEN or key in FORBIDDEN:
            raise ConfigError(
                f"{name}: {top} cannot be swept (output_dir, run_name and main_path_dir say "
                "where outputs go, seeds are already a list every point runs, toy keys are not "
                "part of a sweep's study). Remove it from sweep; set seeds: [...] for more seeds")
        if not _has(config, key):
            raise ConfigError(f"{name}: no such config key ({where}); write it dotted from the "
                              "top, e.g. optimizer.subpath_lr or schedule.decay")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{name} = {values!r}: must be a non-empty list of values, e.g. "
                              f"[{json.dumps(_get(config, key))}]")
        seen = [json.dumps(canonical(v), sort_keys=True) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"{name} = {values!r}: a value is listed twice; list each once")
    keys = list(grid)
    nested = [(a, b) for a in keys for b in keys if a != b and b.startswith(f"{a}.")]
    if nested:
        raise ConfigError(f"config key sweep: {nested[0][0]} and {nested[0][1]} are both swept, "
                          "one inside the other; sweep the whole mapping or one key of it")
    return grid


def expand(config: dict) -> Sweep:
    """The sweep of a run's config (with `sweep:`): every point's config validated, the main
    paths they share; ConfigError naming the point and the key otherwise."""
    from lrdecay.config.validate import validate  # the schema and its registries: not for jobs

    grid = _check_grid(config)
    keys = list(grid)
    short = short_names(keys)
    base = {k: copy.deepcopy(v) for k, v in config.items() if k != SWEEP_KEY}
    if base.get("main_path_dir") is not None:
        raise ConfigError("config key main_path_dir: set by a sweep for its points, not by hand; "
                          "remove it")
    run_dir = Path(base["output_dir"]) / base["run_name"]
    points, by_name = [], {}
    for index, combo in enumerate(itertools.product(*grid.values())):
        values = tuple(zip(keys, combo, strict=True))
        name = ",".join(f"{short[k]}={value_name(v)}" for k, v in values)
        label = f"sweep point {name!r}"
        if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
            raise ConfigError(
                f"{label}: its folder name must be at most {MAX_NAME} characters of letters, "
                "digits and _ . = , + -; sweep simpler values (or fewer keys)")
        if name in by_name:
            raise ConfigError(f"{label}: two points get this folder name (values "
                              f"{by_name[name]} and {list(values)}); list distinct values")
        by_name[name] = list(values)
        point = copy.deepcopy(base)
        for key, value in values:
            _set(point, key, value)
        point.update(output_dir=str(run_dir), run_name=name, main_path_dir=None)
        try:
            point = validate(point)
        except ConfigError as err:
            keys_named = ", ".join(f"{k} = {json.dumps(v)}" for k, v in values)
            raise ConfigError(f"{label} ({keys_named}): {err}") from None
        points.append((index, name, values, point))
    groups: dict[str, list] = {}
    for entry in points:
        groups.setdefault(main_values(entry[3]), []).append(entry)
    main_keys = [k for k in keys if reads_main_path(k)]
    mains, main_of = [], {}
    for index, members in enumerate(groups.values()):
        first = dict(members[0][2])
        name = ",".join([MAIN_NAME, *(f"{short[k]}={value_name(first[k])}" for k in main_keys)])
        if len(groups) > 1 and not main_keys or name in [m.name for m in mains]:
            raise ConfigError(f"config key sweep: main paths {name!r} differ in a value no "
                              "swept main-path key names; report this (lrdecay.config.sweep)")
        cfg = copy.deepcopy(members[0][3])
        cfg["run_name"] = name
        mains.append(MainPath(index, name, cfg, tuple(m[1] for m in members)))
        main_of.update((m[1], name) for m in members)
    out = []
    for index, name, values, point in points:
        point["main_path_dir"] = str(run_dir / main_of[name])
        point = validate(point)
        out.append(Point(index, name, values, point, main_of[name]))
    return Sweep(run_dir, tuple(keys), tuple(out), tuple(mains))
