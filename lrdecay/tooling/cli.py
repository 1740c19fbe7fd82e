"""`lrdecay`: the study's stages on explicit files, without Snakemake, and a plan of a config.

Snakemake orchestrates the whole study; these commands are the other way in, as in
loss-landscape's scripts: PCA over trajectories you already have, a landscape over a basis you
already have, the prepared dataset, and `describe` to see what a config will cost before a run.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lrdecay import __version__
from lrdecay.config import validate as lrconfig
from lrdecay.core import io

log = logging.getLogger(__name__)


class CommandError(ValueError):
    """A command's arguments or files cannot be used; the message says why and what to pass."""


def load_config(paths: list[str], sets: list[str]) -> dict:
    """Each file in order (the schema's defaults fill the rest), then KEY=VALUE overrides, validated
    (also for benchmarks/reference_run.sh: a bad reduction stops before hours of work)."""
    import yaml

    overrides: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--set {lrconfig._short(repr(item))}: expected KEY=VALUE, "
                               "e.g. --set optimizer.main_lr=0.05")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return lrconfig.load(*paths, overrides=overrides)


def study_size(config: dict) -> dict:
    """Jobs, model-epochs, images and bytes a config implies (no data or model is loaded)."""
    from lrdecay.config import resources

    plan = lrconfig.Plan(config)
    sched = config["schedule"]
    n_train, n_test = resources.dataset_images(config)
    n_params = resources.n_params(config)
    n_subpaths = len(plan.branch_epochs)
    every = config["trajectory"]["every_epochs"]
    # Saved every `every` epochs plus each path's start (segment ends add a few more).
    snapshots = sched["main_epochs"] // every + 1
    snapshots += n_subpaths * (sched["subpath_epochs"] // every + 1)
    full_pass = config["metrics"]["train_metric"] == "full_pass"
    per_seed = sched["main_epochs"] + n_subpaths * sched["subpath_epochs"]
    n_seeds = len(plan.seeds)  # the whole study runs once per seed
    return {
        "run_dir": str(plan.run_dir),
        "n_seeds": n_seeds,
        "n_train": n_train,
        "n_test": n_test,
        "n_params": n_params,
        "main_epochs": sched["main_epochs"],
        "n_subpaths": n_subpaths,
        "subpath_epochs": sched["subpath_epochs"],
        "model_epochs_per_seed": per_seed,
        "model_epochs": per_seed * n_seeds,
        # label noise evaluates the training set once more (clean and flipped, engine)
        "eval_images_per_epoch": n_test + (n_train if full_pass else 0)
        + (n_train if config["data"]["label_noise"] > 0 else 0),
        "main_segment_jobs": len(plan.segment_ends) + 1,
        "subpath_group_jobs": len(plan.subpath_groups),
        "landscape_points": plan.grid_points,
        "landscape_shard_jobs": plan.n_shards,
        "snapshot_bytes": n_seeds * snapshots * n_params
        * np.dtype(config["trajectory"]["dtype"]).itemsize,
        "sharpness": resources.sharpness_cost(config),  # per seed
    }


def median_seconds(run: Callable[[], None], min_reps: int = 5, budget_s: float = 10.0,
                   max_reps: int = 100, min_timing_s: float = 0.05) -> tuple[float, float,
                                                                             float, int]:
    """(median, fastest, slowest, repeats) of `run`'s wall time per call: at least `min_reps`
    timings, more while `budget_s` lasts, each of enough calls to last `min_timing_s` (a
    millisecond step timed alone is mostly clock and scheduler noise). One timing is at the
    mercy of whatever else the machine does (issue 23: 23 ms to 14.5 s per model-epoch on three
    identical calls); the median is not."""
    began = time.perf_counter()
    run()
    calls = max(1, math.ceil(min_timing_s / max(time.perf_counter() - began, 1e-9)))
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < stop and len(times) < max_reps):
        began = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - began) / calls)
    return statistics.median(times), min(times), max(times), len(times)


def measure_seconds(config: dict, size: dict, min_reps: int = 5, budget_s: float = 10.0) -> dict:
    """Seconds per model-epoch (training plus its evaluation) and per evaluated image on the
    configured device, timed on synthetic inputs of the real shapes: the median of repeated
    training steps and evaluation batches after two warm-up steps. A projection, not a
    benchmark."""
    import torch

    from lrdecay.config import resources
    from lrdecay.training import models
    from lrdecay.training.data import DATASETS
    from lrdecay.training.engine import loss_function, resolve_device

    name = config["device"]
    device = resolve_device("auto" if name == "cuda" and not torch.cuda.is_available() else name)
    batch = config["optimizer"]["batch_size"]
    eval_batch = config["metrics"]["eval_batch_size"]
    dataset = DATASETS[config["data"]["name"]]
    shape, n_classes = dataset.input_shape, dataset.n_classes
    torch.manual_seed(config["seeds"][0])
    model = models.build(config["model"], shape, n_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    loss_fn = loss_function(config["loss"])
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, n_classes, (batch,), device=device)
    x_eval = torch.randn(min(eval_batch, 512), *shape, device=device)
    # as many threads as a training job uses (engine.threads, else the rule's threads): more
    # than the job has would flatter it, and on a shared machine make the timings erratic
    threads = config["engine"]["threads"] or resources.JobCosts(config, gpu=False).threads
    torch.set_num_threads(threads)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        sync()

    def evaluate() -> None:
        with torch.no_grad():
            model(x_eval)
        sync()

    for _ in range(2):  # warm-up: allocator, kernel selection
        train_step()
    step_s, fastest, slowest, reps = median_seconds(train_step, min_reps, budget_s)
    model.eval()
    evaluate()
    eval_s = median_seconds(evaluate, min_reps, budget_s / 2)[0]
    eval_image_s = eval_s / len(x_eval)
    steps_per_epoch = -(-size["n_train"] // batch)
    epoch_s = steps_per_epoch * step_s + size["eval_images_per_epoch"] * eval_image_s
    return {"epoch_s": epoch_s, "eval_image_s": eval_image_s, "device": device.type,
            "threads": threads, "step_s": step_s, "step_spread_s": (fastest, slowest),
            "steps_timed": reps}


# The rules whose requests describe lists: the large ones, and one of the small.
REQUEST_RULES = ("prepare_data", "main_segment", "subpath_group", "gather_training", "pca",
                 "landscape_shard", "sharpness", "figure2")


def request_lines(config: dict) -> list[str]:
    """Each big rule's mem_mb and runtime as Snakemake requests them (SLURM's --mem and -t),
    clipped to LRDECAY_MAX_MEM_MB / LRDECAY_MAX_RUNTIME as the Snakefile clips them, so the
    requests can be checked against a cluster's limits before anything is submitted."""
    from shutil import which

    from lrdecay.config import resources

    gpu = config["device"] == "cuda" or (config["device"] == "auto" and bool(which("nvidia-smi")))
    caps = resources.Caps.from_env()
    costs = resources.JobCosts(config, gpu=gpu, caps=caps)
    resources.check_caps(costs)
    shown = [f"{var}={getattr(caps, key)}" for key, var in resources.CAP_ENV.items()
             if getattr(caps, key) is not None]
    capped = ", ".join(shown) or "no caps: set LRDECAY_MAX_MEM_MB, LRDECAY_MAX_RUNTIME"
    lines = [f"requests           per job, attempt 1 -> 2 ({capped})"]
    for rule in REQUEST_RULES:
        mem, minutes = costs.mem_mb(rule), costs.runtime(rule)
        notes = []
        if mem < costs.mem_estimate(rule):
            notes.append(f"capped from {costs.mem_estimate(rule)}"
                         + (f"; chunk_rows {costs.pca_chunk_rows()} of "
                            f"{config['pca']['chunk_rows']} fits" if rule == "pca" else
                            ": may run out of memory"))
        if minutes < costs.runtime_estimate(rule):
            notes.append(f"capped from {costs.runtime_estimate(rule)} min"
                         + (f": {costs.continuations(rule)} resubmission(s) resume it"
                            if rule in resources.RESUMABLE_RULES else
                            ": cannot resume, may not finish"))
        lines.append(f"  {rule:<17}mem_mb {mem:>7} -> {costs.mem_mb(rule, 2):>7}  runtime "
                     f"{minutes:>5} -> {costs.runtime(rule, 2):>5} min"
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    return lines


def sweep_size(config: dict) -> tuple[list[str], dict]:
    """A sweep's points and shared main paths, and in all its model-epochs, snapshot bytes and
    sharpness model-epochs: each main path counted once however many points branch from it (what
    Snakemake runs), each point's own jobs once per point (its target builds no landscape)."""
    from lrdecay.config import sweep

    grid = sweep.expand(config)
    lines = [f"sweep              {len(grid.points)} points ({', '.join(grid.keys)}), "
             f"{len(grid.mains)} main path(s) they share, each trained once; every point is "
             "the study above with its values"]
    totals = {"model_epochs": 0, "snapshot_bytes": 0, "sharpness_epochs": 0}
    for main in grid.mains:
        size = study_size(main.config)
        totals["model_epochs"] += size["main_epochs"] * size["n_seeds"]
        lines.append(f"  {main.name}: {size['main_epochs']} epochs x {size['n_seeds']} seeds "
                     f"for {len(main.points)} point(s)")
    for point in grid.points:
        size = study_size(point.config)
        totals["model_epochs"] += size["n_subpaths"] * size["subpath_epochs"] * size["n_seeds"]
        totals["snapshot_bytes"] += size["snapshot_bytes"]
        totals["sharpness_epochs"] += size["sharpness"]["epochs"] * size["n_seeds"]
        lines.append(f"  {point.name}: {size['n_subpaths']} x {size['subpath_epochs']} subpath "
                     f"epochs x {size['n_seeds']} seeds, main path {point.main}")
    return lines, totals


def describe(args: argparse.Namespace) -> int:
    """Print the plan of a config: jobs, model-epochs, storage and a projected time."""
    config = load_config(args.config, args.set)
    size = study_size(config)
    lines = [
        f"run folder         {size['run_dir']}",
        f"seeds              {config['seeds']}: the study below once per seed",
        f"data               {config['data']['name']}: {size['n_train']} train, "
        f"{size['n_test']} test images",
        f"model              {config['model']['name']}: {size['n_params']:,} parameters",
        f"main path          {size['main_epochs']} epochs in {size['main_segment_jobs']} jobs "
        f"(initial state + segments of {config['schedule']['segment_epochs']})",
        f"subpaths           {size['n_subpaths']} x {size['subpath_epochs']} epochs in "
        f"{size['subpath_group_jobs']} jobs of up to {config['schedule']['subpaths_per_job']}",
        f"model-epochs       {size['model_epochs']:,} ({size['model_epochs_per_seed']:,} per "
        f"seed x {size['n_seeds']})",
        f"evaluation         {size['eval_images_per_epoch']:,} images per model-epoch (test set"
        + (", training set" if config["metrics"]["train_metric"] == "full_pass" else "")
        + (", training set again for label noise's clean/flipped metrics"
           if config["data"]["label_noise"] > 0 else "") + ")",
        f"landscape          {size['landscape_points']} grid points in "
        f"{size['landscape_shard_jobs']} jobs",
        f"snapshots          about {size['snapshot_bytes'] / 1e9:.2f} GB "
        f"({config['trajectory']['dtype']}, every {config['trajectory']['every_epochs']} epochs)",
        f"sharpness          {size['sharpness']['points']} points per seed (branch points and "
        f"subpath ends), each at most {size['sharpness']['max_steps']} Hessian-vector products "
        f"on {size['sharpness']['samples']} training images (tol "
        f"{size['sharpness']['tol']:g}): at most "
        f"{size['sharpness']['epochs_per_point']:.2f} model-epochs of work per point, "
        f"{size['sharpness']['epochs'] / size['model_epochs_per_seed']:.1%} of training",
    ]
    # sharpness model-epochs the whole run may spend (every seed; every point of a sweep)
    sharpness_epochs = size["sharpness"]["epochs"] * size["n_seeds"]
    if config.get("sweep"):  # the whole run: main paths once, every point's subpaths
        sweep_lines, totals = sweep_size(config)
        lines += [*sweep_lines,
                  f"sweep in all       {totals['model_epochs']:,} model-epochs, snapshots about "
                  f"{totals['snapshot_bytes'] / 1e9:.2f} GB (each point's study keeps its own "
                  "copy of the main path's trajectory); no landscape (the sweep's target "
                  "builds none: a point's is `snakemake "
                  "<run>/<point>/seed-<s>/landscape/grid.csv`)"]
        size = {**size, "model_epochs": totals["model_epochs"], "landscape_points": 0}
        sharpness_epochs = totals["sharpness_epochs"]
    print("\n".join([*lines, *request_lines(config)]), flush=True)
    lines = []
    if args.measure:
        print(f"timing training steps of {config['model']['name']} (batch "
              f"{config['optimizer']['batch_size']}, synthetic inputs) on this machine: the "
              "median of at least 5 timings each of training and evaluation (about 15 s; longer "
              "where one step takes seconds) ...", flush=True)
        timing = measure_seconds(config, size)
        epoch_s, device = timing["epoch_s"], timing["device"]
        train_s = size["model_epochs"] * epoch_s
        grid_s = size["landscape_points"] * (size["n_train"] + size["n_test"]) * timing[
            "eval_image_s"]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if load > 0.5 * (os.cpu_count() or 1):
            lines.append(f"note               load average {load:.1f} on {os.cpu_count()} cores "
                         "while timing: other work shares the machine, so the times are upper "
                         "bounds")
        if device != config["device"] and config["device"] != "auto":
            lines.append(f"note               config asks for {config['device']}, which this "
                         f"machine lacks: timed on {device}")
        fastest, slowest = timing["step_spread_s"]
        lines += [
            f"measured           {epoch_s * 1e3:.1f} ms per model-epoch on {device} "
            f"(one model, {timing['threads']} thread(s); a training step "
            f"{timing['step_s'] * 1e3:.1f} ms, median "
            f"of {timing['steps_timed']} timings, range {fastest * 1e3:.1f}-{slowest * 1e3:.1f}"
            " ms)",
            f"projected          training {train_s / 3600:.2f} h, landscape {grid_s / 3600:.2f} h "
            f"on one {device} (K-at-once on a GPU is faster: see benchmarks/RESULTS.md)",
            f"sharpness          at most {size['sharpness']['epochs_per_point'] * epoch_s:.2f} s "
            f"per point, {sharpness_epochs * epoch_s / 3600:.2f} h "
            "in all (Lanczos usually stops well before max_steps; each point's time is in the "
            "sharpness job's log)",
        ]
    if lines:
        print("\n".join(lines))
    return 0


def prepare_data(args: argparse.Namespace) -> int:
    """Write the run's dataset file (the subset, labels and statistics) to --out."""
    from lrdecay.training import data

    config = load_config(args.config, args.set)
    data.prepare(config["data"], config["data"]["seed"], args.out)
    print(f"wrote {args.out}")
    return 0


def _trajectory(path: Path, index: int) -> tuple[np.ndarray, dict]:
    """A verified trajectory with its sidecar, or a plain .npy with epochs numbered 0..n-1."""
    if path.with_name(path.name + ".json").exists():
        return io.load_array(path, fix=f"check {path} and its checksum record {path.name}.json")
    try:
        array = np.load(io.guard(path), mmap_mode="r")
    except (ValueError, EOFError) as err:  # not a .npy file (a pickle is refused, not loaded)
        raise CommandError(f"{path} is not a .npy array ({err}). Fix: pass .npy files whose "
                           "rows are flattened parameters") from None
    if array.ndim != 2:
        raise CommandError(f"{path}: expected (n_snapshots, n_params), got shape {array.shape}. "
                           "Fix: pass one row per snapshot (array.reshape(len(array), -1))")
    log.warning("%s has no checksum record; its rows are taken as epochs 0..%d", path,
                len(array) - 1)
    return array, {"epochs": list(range(len(array))), "branch_epoch": None if index == 0 else index}


def pca_command(args: argparse.Namespace) -> int:
    """PCA over trajectory files (the first is the main path); writes the three PCA outputs."""
    from lrdecay.analysis import pca

    trajectories = [_trajectory(Path(p), i) for i, p in enumerate(args.trajectories)]
    widths = {t.shape[1] for t, _ in trajectories}
    if len(widths) != 1:
        raise CommandError(f"trajectories have different parameter counts {sorted(widths)}: "
                           "they must come from one architecture")
    out = Path(args.out)
    pca_config = {"n_components": args.components, "method": args.method,
                  "chunk_rows": args.chunk_rows}
    result = pca.run_on(trajectories, pca_config, out / "explained_variance.csv",
                        out / "coordinates.csv", out / "basis.npy", config_hash="cli")
    ratio = result.explained_variance_ratio
    print(f"PC1 + PC2 explain {100 * ratio[:2].sum():.2f} % of the variance; wrote {out}/")
    return 0


def landscape_command(args: argparse.Namespace) -> int:
    """Evaluate the loss on the config's grid in the plane of a PCA basis; one CSV row a point."""
    from lrdecay.analysis import landscape

    config = load_config(args.config, args.set)
    config = lrconfig.for_seed(config, config["seeds"][0])  # a training job's config
    landscape.evaluate_shard(config, args.data, args.basis, args.coordinates, 0, 1, args.out,
                             config["device"], config["engine"]["threads"])
    print(f"wrote {args.out}")
    if args.surface_table:  # each snapshot's distance from the grid's surface
        landscape.write_surface(config["landscape"], args.coordinates, args.surface_table)
        print(f"wrote {args.surface_table}")
    return 0


# argparse types of the schema's scalar types
_SCHEMA_TYPES = {"integer": int, "number": float, "string": str}


def schema_option(key: str) -> dict[str, Any]:
    """argparse settings (type, default, choices, help) of an option that sets config key `key`
    (dotted), read from the schema, so an option never restates a default that could drift."""
    section, name = key.split(".")
    spec = lrconfig.load_schema()["properties"][section]["properties"][name]
    described = spec["description"].replace("%", "%%")  # argparse formats help with %
    option: dict[str, Any] = {"type": _SCHEMA_TYPES[spec["type"]], "default": spec["default"],
                              "help": f"{described} (config key {key}; default {spec['default']})"}
    if "enum" in spec:
        option["choices"] = spec["enum"]
    return option


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lrdecay",
        description="Stages of the late-learning-rate-decay study on explicit files. The whole "
        "study runs through Snakemake: `snakemake --cores N` (see README).",
    )
    top.add_argument("--version", action="version", version=f"lrdecay {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="+", help="config files, later ones override earlier "
                       "keys (start from config.yaml or a preset in config/)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one key, e.g. --set optimizer.main_lr=0.05 (repeatable)")

    p = sub.add_parser("describe", help="the plan of a config: jobs, model-epochs, storage and a "
                       "projected time measured on this machine")
    with_config(p)
    p.add_argument("--no-measure", dest="measure", action="store_false",
                   help="skip the timing (no model is run)")
    p.set_defaults(func=describe)

    p = sub.add_parser("prepare-data", help="write the dataset file a config trains on")
    with_config(p)
    p.add_argument("--out", required=True, help="output .pt file")
    p.set_defaults(func=prepare_data)

    p = sub.add_parser("pca", help="PCA over trajectories (.npy, rows = flattened parameters; "
                       "the first file is the main path)")
    p.add_argument("trajectories", nargs="+")
    p.add_argument("--out", required=True, help="folder for explained_variance.csv, "
                   "coordinates.csv and basis.npy")
    p.add_argument("--components", **schema_option("pca.n_components"))
    p.add_argument("--method", **schema_option("pca.method"))
    p.add_argument("--chunk-rows", **schema_option("pca.chunk_rows"))
    p.set_defaults(func=pca_command)

    p = sub.add_parser("landscape", help="train/test loss on the config's landscape grid in the "
                       "PC1-PC2 plane of a basis written by `lrdecay pca`")
    with_config(p)
    p.add_argument("--data", required=True, help="dataset file from `lrdecay prepare-data`")
    p.add_argument("--basis", required=True, help="basis.npy (row 0 mean, rows 1.. components)")
    p.add_argument("--coordinates", required=True, help="coordinates.csv (sets an auto range)")
    p.add_argument("--out", required=True, help="output grid CSV")
    p.add_argument("--surface-table", help="also write each snapshot's distance from the grid's "
                   "surface (landscape.surface: plane or curved) to this CSV")
    p.set_defaults(func=landscape_command)

    p = sub.add_parser("reference", help="copy a finished run's tables and figures to a folder "
                       "to commit, with provenance.json (device, versions, commit, config hash, "
                       "command, wall time per stage)")
    with_config(p)
    p.add_argument("--dest", required=True, help="folder to (re)write, e.g. reference/authors")
    p.add_argument("--command", required=True, dest="run_command",
                   help="the exact command that produced the run")
    p.add_argument("--wall-s", type=float, default=None, help="the run's wall time, if measured")
    p.set_defaults(func=reference_command)
    return top


def reference_command(args: argparse.Namespace) -> int:
    from lrdecay.analysis import reference

    config = load_config(args.config, args.set)
    written = reference.package(config, lrconfig.Plan(config).run_dir, args.dest,
                                args.run_command, args.wall_s)
    print(f"wrote {written.parent} ({len(list(written.parent.rglob('*')))} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Plain console logging: logs.setup is for jobs (log file, excepthook, peak memory at exit).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as err:  # noqa: BLE001 (lrdecay's own errors and the OS's: no traceback)
        message = user_error(err)
        if message is None:
            raise  # a bug: the traceback is what its report needs
        print(f"lrdecay {args.command}: {message}", file=sys.stderr)
        return 2


def user_error(err: BaseException) -> str | None:
    """The message of an error a user acts on (lrdecay's own errors name the problem and the
    fix; the OS's name the file, with a fix added here), or None for anything else (a bug)."""
    if isinstance(err, OSError) and not type(err).__module__.startswith("lrdecay"):
        where = f"{err.filename}" if err.filename is not None else "a file"
        fixes = {
            errno.ELOOP: "a symbolic link on that path leads back to itself: delete it",
            errno.ENOSPC: "free space there (df -h) and rerun the same command",
            errno.EROFS: "the file system is read-only: write somewhere else (--out)",
            errno.EACCES: "no permission: check the path's owner and mode",
            errno.ENOENT: "check the path",
        }
        fix = fixes.get(err.errno, "check the path")
        return f"{where}: {err.strerror or err}. Fix: {fix}"
    if isinstance(err, lrconfig.ConfigError | io.CorruptFileError | io.UnsafePathError):
        return str(err)
    if type(err).__module__.startswith("lrdecay."):  # DataError, LockHeld, DegeneratePCAError...
        return str(err)
    return None


if __name__ == "__main__":
    sys.exit(main())
