"""Configuration: schema validation with readable errors, cross-field checks, and the study plan.

The schemas (lrdecay/config/schemas/*.schema.yaml, shipped with the package) are the single source
of defaults and documentation; the quick preset (config.yaml) equals their defaults (a test checks).
`validate` is the one validation path: the Snakefile, `load` and the command line all call it.
Everything that turns a config into epochs, jobs and paths lives in :class:`Plan`
(lrdecay.study.plan, re-exported here), so the Snakemake rules, the package and the tests agree on
one layout.
"""

from __future__ import annotations

import copy
import errno
import math
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lrdecay.config import resources

# Defined apart for job code, re-exported here (see lrdecay.core.basics and lrdecay.study.plan).
from lrdecay.core.basics import ConfigError, config_hash  # noqa: F401
from lrdecay.study import layout
from lrdecay.study.plan import (  # noqa: F401
    LATER_DEFAULTS,
    MAIN_PATH,
    NUMERIC_ENGINE_KEYS,
    SUBPATH_KEYS,
    SUBPATHS,
    TRAINING,
    Plan,
    Reads,
    canonical,
    engine_run,
    for_seed,
    job_config,
)
from lrdecay.toy.instance import check_toy_config
from lrdecay.training.data import DATASETS
from lrdecay.training.models import MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (config.yaml, config/)
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"  # package data: works when installed
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"
TOY_SCHEMA_PATH = SCHEMA_DIR / "toy.schema.yaml"


# Per-key wording where the schema's rule alone would not say what is allowed.
KEY_HINTS = {
    "run_name": "must be one folder name: letters, digits, '_', '.', '-', '=', ',' and '+', at "
    "most 100 characters, not '.' or '..' (outputs go to <output_dir>/<run_name>/)",
}
# Bytes of host memory per landscape grid point: every shard job builds the whole grid table
# (meshgrid 2 x float64, table 3 x 8 bytes), and keeps one result row (a dict of 7 values, then
# a table row) per point it evaluates.
LANDSCAPE_BYTES_PER_GRID_POINT = 40
LANDSCAPE_BYTES_PER_SHARD_POINT = 800


MAX_SHOWN = 200  # characters of a value (or key) a message shows; longer ones are cut


def _short(text: Any) -> str:
    """`text` (str() of it) for a message: cut to MAX_SHOWN characters, saying how long it was, so
    a megabyte-long value does not come back whole."""
    text = str(text)
    if len(text) <= MAX_SHOWN:
        return text
    return f"{text[:MAX_SHOWN - 40]}... ({len(text):,} characters)"


def _key_path(path: Any) -> str:
    return _short(".".join(str(p) for p in path) or "<top level>")


def _describe(error: jsonschema.ValidationError, schema_name: str, prefix: str = "") -> str:
    key = _key_path([*([prefix] if prefix else []), *error.absolute_path])
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
        "maxLength": f"must have at most {bound} characters",
        "uniqueItems": "must not list a value twice",
    }.get(rule)
    if rule == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        where = [*([prefix] if prefix else []), *error.absolute_path]
        unknown = [_key_path([*where, name]) for name in error.instance if name not in known]
        return (f"config key {', '.join(unknown)}: unknown key (the allowed keys are "
                f"{', '.join(known)}; see lrdecay/config/schemas/{schema_name})")
    allowed = KEY_HINTS.get(key, allowed) if rule in ("pattern", "maxLength") else allowed
    if key.startswith("landscape.points") and rule == "minimum":
        allowed = "a grid needs at least 2 points a side"
    if key == "data.label_noise" and rule in ("minimum", "exclusiveMaximum"):
        allowed = ("the fraction of training labels flipped must be in [0, 1): use e.g. 0.2, "
                   "or 0 for no label noise")
    return f"config key {key} = {_short(repr(error.instance))}: {allowed or _short(error.message)}"


# A top-level key that makes Snakemake evaluate a config file as a YTE template (Python code).
YTE_KEY = "__use_yte__"
# Values a config may hold, counted with every YAML alias expanded: every preset holds a few
# hundred, while a 'billion laughs' of nested aliases expands a few lines to billions, which the
# schema check would walk for hours.
MAX_CONFIG_VALUES = 10_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{node.start_mark.name}: key {key!r} appears twice in one section (lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}); YAML would silently "
                    "keep the second. Delete one of them."
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, path: Path, memo: dict[int, int],
                   open_nodes: set[int]) -> int:
    """Values `node` holds with its aliases expanded (each shared node is counted once per use,
    computed once); a node that contains itself is a ConfigError."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"config file {path}: the YAML alias at line {node.start_mark.line + 1} "
                          "refers to a value that contains it (an endless value); write the "
                          "values out")
    open_nodes.add(id(node))
    children: list = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, path, memo, open_nodes) for child in children)
    open_nodes.discard(id(node))
    memo[id(node)] = size
    return size


def _load_bounded(handle: Any, path: Path) -> Any:
    """yaml.load with _UniqueKeyLoader, refusing a document whose aliases expand it beyond
    MAX_CONFIG_VALUES values (checked on the node graph, before anything is built)."""
    loader = _UniqueKeyLoader(handle)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, path, {}, set())
        if size > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"config file {path} holds {size:,} values once its YAML aliases (*name) are "
                f"expanded, more than the {MAX_CONFIG_VALUES:,} a config may hold (a nest of "
                "aliases that repeats a list many times, a 'billion laughs'); write the values "
                "out instead of aliasing them"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """A config or schema file as a dict; a missing file, bad YAML, a duplicate key, aliases
    that expand beyond MAX_CONFIG_VALUES or a YTE template is a ConfigError naming the file."""
    path = Path(path)
    try:
        with open(path) as handle:
            loaded = _load_bounded(handle, path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (full path: {path.resolve()})") \
            from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests its values too deeply to read (thousands "
                          "of levels); a config is a few levels deep") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not "
                          f"{type(loaded).__name__}")
    if YTE_KEY in loaded:
        raise ConfigError(
            f"config file {path} sets {YTE_KEY}: it is a YTE template, whose ?-expressions are "
            "Python code that Snakemake runs when it loads the file (before lrdecay can read "
            "it, even on a dry run), so it can run any command. lrdecay refuses such files: "
            f"delete the {YTE_KEY} key and write plain values (and check what the file may "
            "already have run)."
        )
    return loaded


def check_files(paths: Any) -> None:
    """Read each existing config file strictly (duplicate keys, YAML errors, YTE templates) for
    Snakemake, whose own loader keeps the last of two equal keys without a word and runs a YTE
    template's code."""
    for path in paths:
        if Path(path).is_file():
            read_yaml(path)


def _schema_types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _parse_scalar(text: str) -> Any:
    """A command-line string as YAML would read it, plus forms PyYAML leaves as strings
    (``1e-3``, ``nan``, ``inf``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return text
    return value


def coerce(schema: dict, value: Any) -> Any:
    """`value` with strings turned into the types the schema asks for, and whole floats into
    integers where it asks for an integer.

    Snakemake passes nested ``--config 'optimizer={main_lr: 0.05}'`` values as strings, and
    ``--config 'seeds=[1e23]'`` as a float; without this they fail the type check or slip past it.
    """
    types = _schema_types(schema)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = coerce(sub, value[key])
        return value
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce(items, v) for v in value] if isinstance(items, dict) else value
    if isinstance(value, str) and types and "string" not in types:
        parsed = _parse_scalar(value)
        return value if isinstance(parsed, str) else coerce(schema, parsed)
    if isinstance(value, float) and "integer" in types and "number" not in types:
        return int(value) if value.is_integer() else value
    if (isinstance(value, int | float) and not isinstance(value, bool) and types == ["string"]):
        return str(value)
    return value


def _check_size(config: dict) -> None:
    """At most MAX_CONFIG_VALUES values, counted by walking (and stopping once over): what a
    --config value or a caller's dict holds, aliases or not, before the schema walks it."""
    count = 0
    for key, value in config.items():
        todo = [value]
        while todo:
            item = todo.pop()
            count += 1
            if count > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"config key {_short(key)} holds too many values: the configuration may "
                    f"hold {MAX_CONFIG_VALUES:,} in all (a YAML alias that repeats a list many "
                    "times?); give it a short list"
                )
            if isinstance(item, dict):
                todo.extend(item.values())
            elif isinstance(item, list | tuple):
                todo.extend(item)


def _non_finite(value: Any, path: tuple = ()) -> list[str]:
    """Keys holding NaN or an infinity (JSON Schema's bounds let both through)."""
    if isinstance(value, dict):
        return [k for key, sub in value.items() for k in _non_finite(sub, (*path, key))]
    if isinstance(value, list):
        return [k for i, sub in enumerate(value) for k in _non_finite(sub, (*path, i))]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"config key {_key_path(path)} = {value}: must be a finite number"]
    return []


def _fill_defaults(schema: dict, instance: dict) -> None:
    """Insert the schema's defaults recursively (objects first, then their properties)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def registered_names() -> dict[tuple[str, ...], list[str]]:
    """Allowed values of the config keys that name a registry entry (models, datasets)."""
    return {("model", "name"): list(MODELS), ("data", "name"): list(DATASETS)}


def load_schema(schema_path: Path = SCHEMA_PATH) -> dict:
    """A schema file, with the enums of model.name and data.name taken from the registries
    (lrdecay.training.models.MODELS, lrdecay.training.data.DATASETS), so a registration is the only
    edit."""
    schema = read_yaml(schema_path)
    if schema_path == SCHEMA_PATH:
        for (section, key), names in registered_names().items():
            schema["properties"][section]["properties"][key]["enum"] = names
    return schema


def _check_against(schema_path: Path, instance: dict, prefix: str = "") -> None:
    schema = load_schema(schema_path)
    coerce(schema, instance)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        lines = [_describe(e, schema_path.name, prefix) for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(schema, instance)


def validate(config: dict) -> dict:
    """Validate `config` in place (schema, defaults, cross-field rules of the study and of the
    toy model) and return it.

    The one validation path: the Snakefile calls it once before any job is planned, `load` and
    the command line call it too, so a bad value stops the run with a message instead of
    failing deep inside training.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, not {config!r}")
    if "seed" in config:  # the key before seeds replicated the study
        raise ConfigError(
            f"config key seed = {config['seed']!r}: replaced by seeds, a list of training seeds "
            f"(the study runs once per seed); use seeds: [{config['seed']}] (or --config "
            f"'seeds=[{config['seed']}]')"
        )
    _check_size(config)
    _check_against(SCHEMA_PATH, config)
    _check_against(TOY_SCHEMA_PATH, config["toy"], prefix="toy")
    non_finite = _non_finite(config)
    if non_finite:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(non_finite))
    check_semantics(config)
    check_paths(config)
    check_toy_config(config["toy"])  # n < d, gamma > -1, a step size that does not diverge
    return config


def check_paths(config: dict) -> None:
    """The run folder must be creatable: no file where a folder of the output path should be."""
    name = config["run_name"]
    if name.strip() != name or Path(name).name != name:  # the schema's pattern lets "x\n" through
        raise ConfigError(f"config key run_name = {_short(repr(name))}: {KEY_HINTS['run_name']}")
    run_dir = Path(config["output_dir"]) / name
    for key, path in (("output_dir", run_dir), ("data.root", Path(config["data"]["root"]))):
        trouble = _broken_link(path)
        if trouble:
            value = config["output_dir"] if key == "output_dir" else config["data"]["root"]
            raise ConfigError(f"config key {key} = {_short(repr(value))}: {trouble}. Fix: "
                              f"delete the link or point {key} at a folder")
    for folder in [run_dir, *run_dir.parents]:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"config key output_dir = {_short(repr(config['output_dir']))}: {folder} is a "
                "file, but "
                f"outputs go into the folder {run_dir}/. Set output_dir to a folder (or move the "
                "file away)."
            )


def _broken_link(path: Path) -> str | None:
    """What is wrong with a symbolic link on `path` (outermost first) that cannot be followed:
    a loop, or a link to nothing; None if there is none."""
    for part in [*reversed(path.parents), path]:
        if part.is_symlink():
            try:
                os.stat(part)
            except OSError as err:
                target = os.readlink(part)
                if err.errno == errno.ELOOP:
                    return (f"{part} is a symbolic link loop (to {target}, which leads back to "
                            "itself)")
                return f"{part} is a symbolic link to {target}, which does not exist"
    return None


def available_memory_bytes() -> int:
    """Physical memory of this machine (the limit a grid's evaluation is checked against)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def schedule_problems(sched: dict) -> list[str]:
    """The warm-up and cooldown (lrdecay.study.schedules) must fit the paths they shape."""
    problems = []
    decay, sub = sched["decay"], sched["subpath_epochs"]
    if decay["shape"] == "step" and decay["epochs"] != 0:
        problems.append(
            f"config key schedule.decay.epochs = {decay['epochs']}: the step shape drops the lr "
            "at the branch point and has no length; set schedule.decay.epochs: 0, or a shape "
            "(linear, cosine, sqrt, square) that spreads the decay over those epochs")
    if decay["shape"] != "step" and decay["epochs"] == 0:
        problems.append(
            f"config key schedule.decay.epochs = 0: a {decay['shape']} cooldown needs its length; "
            f"set schedule.decay.epochs to 1..{sub} (schedule.subpath_epochs), or shape: step")
    if decay["epochs"] > sub:
        problems.append(
            f"config key schedule.decay.epochs = {decay['epochs']}: the cooldown is longer than "
            f"the subpath (schedule.subpath_epochs = {sub}); use at most {sub} or lengthen "
            "schedule.subpath_epochs")
    if sched["warmup_epochs"] > sched["first_branch_epoch"]:
        problems.append(
            f"config key schedule.warmup_epochs = {sched['warmup_epochs']}: the warm-up runs past "
            f"the first branch epoch (schedule.first_branch_epoch = "
            f"{sched['first_branch_epoch']}), so a subpath would branch mid-warm-up; use at most "
            f"{sched['first_branch_epoch']} or branch later")
    return problems


def optimizer_problems(opt: dict) -> list[str]:
    """Each optimizer's own keys (momentum: SGD's; betas, eps: AdamW's) must stay at their
    defaults under the other one: refused, not ignored, so a key that changes nothing neither
    reruns jobs nor reads as if it had been used."""
    problems = []
    if opt["name"] == "adamw" and opt["momentum"] != 0:
        problems.append(
            f"config key optimizer.momentum = {opt['momentum']}: it is SGD's; AdamW's momentum is "
            "optimizer.betas[0]; set optimizer.momentum: 0 or optimizer.name: sgd")
    if opt["name"] == "sgd":
        for key in ("betas", "eps"):
            default = LATER_DEFAULTS[f"optimizer.{key}"]  # the schema's (a test checks)
            if canonical(opt[key]) != canonical(default):
                problems.append(
                    f"config key optimizer.{key} = {opt[key]}: it is AdamW's and SGD does not read "
                    f"it; set optimizer.name: adamw, or remove the key (default {default})")
    return problems


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
    problems += schedule_problems(sched)
    problems += optimizer_problems(config["optimizer"])

    data = config["data"]
    dataset = DATASETS[data["name"]]
    pools = dataset.pool_per_class
    for split in ("train", "test"):
        wanted = data[f"{split}_per_class"]
        if wanted is not None and wanted > pools[split]:
            problems.append(
                f"config key data.{split}_per_class = {wanted}: {data['name']} has only "
                f"{pools[split]} {split} images per class; use at most {pools[split]} or null (all)"
            )
    if data["augment"] and not dataset.augmentable:
        problems.append(
            f"config key data.augment = True: random crops and flips are for images such as "
            f"CIFAR's, not {data['name']}; set it to false for {data['name']}"
        )
    model = config["model"]["name"]
    needs = MODELS[model].input_shape
    if needs is not None and tuple(needs) != tuple(dataset.input_shape):
        fits = [name for name, spec in DATASETS.items() if tuple(spec.input_shape) == needs]
        others = [name for name, spec in MODELS.items() if spec.input_shape is None]
        problems.append(
            f"config key model.name = {model!r}: needs inputs of shape {needs} (data.name: "
            f"{' or '.join(fits)}), but {data['name']} has {tuple(dataset.input_shape)}; use "
            f"{' or '.join(others)} for {data['name']}"
        )
    outputs = MODELS[model].n_outputs
    if outputs is not None and outputs != dataset.n_classes:
        fits = [name for name, spec in DATASETS.items() if spec.n_classes == outputs]
        heads = [name for name, spec in MODELS.items() if spec.n_outputs is None]
        problems.append(
            f"config key model.name = {model!r}: has {outputs} outputs, but data.name = "
            f"{data['name']!r} has {dataset.n_classes} classes; use data.name: "
            f"{' or '.join(fits) or '(none registered)'}, or a model with one output per class "
            f"({', '.join(heads)})"
        )
    noise, per_class = data["label_noise"], data["train_per_class"]
    if noise > 0 and per_class is not None and round(noise * per_class * dataset.n_classes) == 0:
        problems.append(
            f"config key data.label_noise = {noise}: flips round({noise} x "
            f"{per_class * dataset.n_classes} training images) = 0 labels; use at least "
            f"{0.5 / (per_class * dataset.n_classes):.2g}, or 0 for no label noise"
        )
    if not problems:  # the plan and the model are well defined now
        problems += plan_problems(config)
    land = config["landscape"]
    if land["range"] == "explicit":
        for axis in ("pc1", "pc2"):
            low, high = land[axis]
            if not low < high:
                problems.append(f"config key landscape.{axis} = {land[axis]}: needs low < high")
    if land["surface"] == "curved" and config["pca"]["n_components"] < 3:
        problems.append(
            f"config key landscape.surface = curved: bends the grid along PC3, but "
            f"pca.n_components = {config['pca']['n_components']} keeps no PC3; set "
            f"pca.n_components to 3 or more (the authors kept 5), or landscape.surface: plane"
        )
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def plan_problems(config: dict) -> list[str]:
    """What the planned jobs cannot do: a Figure 1 from one branch epoch, more jobs than their
    names can number, a landscape grid larger than this machine's memory."""
    sched, land = config["schedule"], config["landscape"]
    plan = Plan(config)
    problems = []
    if len(plan.branch_epochs) < 2:
        problems.append(
            f"config keys schedule.first_branch_epoch = {sched['first_branch_epoch']}, "
            f"schedule.last_branch_epoch = {sched['last_branch_epoch']}, "
            f"schedule.branch_interval = {sched['branch_interval']}: give "
            f"{len(plan.branch_epochs)} branch epoch {plan.branch_epochs}; Figure 1 compares "
            "decay epochs and needs at least 2 (lower branch_interval or widen "
            "first/last_branch_epoch)"
        )
    if len(plan.subpath_groups) > MAX_GROUPS:
        problems.append(
            f"config key schedule.subpaths_per_job = {sched['subpaths_per_job']}: "
            f"{len(plan.branch_epochs)} branch epochs make {len(plan.subpath_groups)} subpath "
            f"jobs, more than the {MAX_GROUPS} that job names allow; raise subpaths_per_job or "
            "schedule.branch_interval"
        )
    have = available_memory_bytes()
    train = resources.JobCosts(config, gpu=False).mem_mb("main_segment") * 2**20
    if train > have:  # the model itself: the landscape's estimate below would blame its grid
        model = config["model"]
        key = "model.hidden" if model["name"] == "mlp" else "model.name"
        value = model["hidden"] if key == "model.hidden" else model["name"]
        problems.append(
            f"config key {key} = {_short(value)}: the model has "
            f"{resources.n_params(config):,} parameters; a training job needs about "
            f"{train / 2**30:.1f} GiB of memory for it, more than this machine's "
            f"{have / 2**30:.1f} GiB; use a smaller model (narrower or fewer layers)"
        )
        return problems
    need = landscape_memory_bytes(plan)
    if need > have:
        problems.append(
            f"config key landscape.points = {land['points']}: evaluating {plan.grid_points:,} "
            f"grid points in {plan.n_shards} shard jobs needs about {need / 2**30:.1f} GiB of "
            f"memory per job, more than this machine's {have / 2**30:.1f} GiB; use fewer points "
            "(or more landscape.shards)"
        )
    return problems


MAX_GROUPS = layout.GROUP.limit  # subpath job names have GROUP.width digits (lrdecay.study.layout)


def load(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Read YAML configs (later ones override earlier keys, as Snakemake merges) and validate."""
    config: dict = {}
    for path in paths:
        _deep_update(config, read_yaml(Path(path)) or {})
    _deep_update(config, overrides or {})
    return validate(config)


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def landscape_memory_bytes(plan: Plan) -> int:
    """Rough peak memory of one landscape shard job: what lrdecay.config.resources gives the job
    (model, PCA basis, dataset, an evaluation batch), plus the grid table and result rows,
    which grow with the number of points."""
    job_mb = resources.JobCosts(plan.config, gpu=False).mem_mb("landscape_shard")
    points_per_shard = math.ceil(plan.grid_points / plan.n_shards)
    return (job_mb * 2**20 + plan.grid_points * LANDSCAPE_BYTES_PER_GRID_POINT
            + points_per_shard * LANDSCAPE_BYTES_PER_SHARD_POINT)
