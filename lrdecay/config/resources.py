"""Memory (mem_mb) and time (runtime, minutes) each job asks for, derived from the config.

SLURM kills a job that outgrows its request and queues a large request longer, so the numbers
follow what the job holds: the model's parameters (weights, gradients, optimiser state), the
snapshots it writes, the dataset, activations of one batch, and for PCA the rows it stacks.
tests/test_resources.py runs small jobs and checks each estimate against the measured peak RSS.
Retries ask for more: memory grows linearly with the attempt, time doubles.

Clusters refuse or never schedule requests above their limits, so a user sets the largest
request once (Caps: LRDECAY_MAX_MEM_MB, LRDECAY_MAX_RUNTIME where snakemake starts) and every
request, retries included, is clipped to it. A training job clipped in time still finishes: it
checkpoints every engine.checkpoint_seconds into .resume/ (lrdecay.training.train), so its rule gets
one retry per slice of the cap (JobCosts.retries) and each resubmission resumes where the last one
was killed. PCA fits its memory cap by choosing its chunk (pca_chunk_rows).

Plain arithmetic on the config; what depends on the model or the dataset (parameter count, cost,
input shape, pool sizes) comes from their registries, lrdecay.training.models.MODELS and
lrdecay.training.data.DATASETS, so a registered model or dataset gets requests without an edit here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# noqa: F401 (PCA's model, used here and by lrdecay.analysis.pca)
from lrdecay.study.pca_budget import (
    MB,
    PCA_BASE_MB,
    SLACK,
    pca_block_rows,
    pca_bytes,
    pca_chunk_rows,
    pca_min_chunk,
    pca_need_mb,
)
from lrdecay.study.plan import Plan
from lrdecay.training import models
from lrdecay.training.data import DATASETS, DatasetSpec

# Resident memory of a job before it does any work: Python with torch, numpy, pandas and
# scikit-learn imported (measured 550-650 MB on Linux x86-64, torch 2.x CPU build).
BASE_MB = 800
# Jobs that never import torch (tables, PCA, figures: Python with numpy, pandas, SciPy,
# scikit-learn or Matplotlib) start far lower: measured 75-200 MB on the tiny preset.
LIGHT_BASE_MB = 200
# Host memory a job adds once it has created a CUDA context (driver, cuBLAS/cuDNN handles).
CUDA_MB = 3000
DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}

# Every job is given this much on top (start-up, reading inputs, writing checkpoints).
OVERHEAD_MIN = 10
TIME_SAFETY = 2.0
MIN_CAP_MB = 1000  # below this not even a job that only imports torch starts


CAP_ENV = {"max_mem_mb": "LRDECAY_MAX_MEM_MB", "max_runtime": "LRDECAY_MAX_RUNTIME"}


class CapsError(ValueError):
    """A cap is malformed or too small for the jobs of this config (the message says the fix)."""


@dataclass(frozen=True)
class Caps:
    """Largest request one job may make: mem_mb (MB) and runtime (minutes); None: no cap.

    Set once per cluster (its partitions' MaxTime and memory per node) through the environment
    where snakemake starts, like the account and partitions of profiles/slurm."""

    max_mem_mb: int | None = None
    max_runtime: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Caps:
        """Caps from LRDECAY_MAX_MEM_MB and LRDECAY_MAX_RUNTIME (unset or empty: no cap)."""
        env = os.environ if env is None else env
        values: dict[str, int | None] = {}
        for key, var in CAP_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                values[key] = None
                continue
            unit = "MB" if key == "max_mem_mb" else "minutes"
            try:
                values[key] = int(raw)
            except ValueError:
                raise CapsError(f"{var} = {raw!r}: expected a whole number of {unit} (e.g. "
                                f"{var}={250000 if unit == 'MB' else 2880}); unset it for no "
                                "cap") from None
            floor = MIN_CAP_MB if key == "max_mem_mb" else OVERHEAD_MIN + 1
            if values[key] < floor:
                raise CapsError(f"{var} = {raw}: below {floor} {unit}, less than any job needs "
                                f"to start; set it to the cluster's limit per job (at least "
                                f"{floor}) or unset it for no cap")
        return cls(**values)

    def mem_mb(self, request: int) -> int:
        return request if self.max_mem_mb is None else min(request, self.max_mem_mb)

    def runtime(self, request: int) -> int:
        return request if self.max_runtime is None else min(request, self.max_runtime)


def _dataset(config: dict) -> DatasetSpec:
    return DATASETS[config["data"]["name"]]


def n_params(config: dict) -> int:
    """Number of trainable parameters of the configured model (as lrdecay.training.models builds
    it)."""
    dataset = _dataset(config)
    return models.n_params(config["model"], dataset.input_shape, dataset.n_classes)


def activations_per_image(config: dict) -> int:
    """Floats one image's forward pass keeps for the backward pass (sum of layer outputs)."""
    model, dataset = config["model"], _dataset(config)
    spec = models.MODELS[model["name"]]
    shape, convs = dataset.input_shape, spec.convs
    if spec.activations is not None:
        return spec.activations(shape, dataset.n_classes, **models._options(model))
    if not convs:  # fully connected: the input, each hidden layer and its ReLU, the output
        return math.prod(shape) + 2 * sum(model["hidden"]) + dataset.n_classes
    side, total = shape[1], math.prod(shape)
    for item in convs:
        if item == "M":
            side //= 2
        else:
            total += 2 * item * side * side  # conv output and its ReLU
    return total + 512


def dataset_images(config: dict) -> tuple[int, int]:
    """(train, test) images of the configured dataset."""
    data, dataset = config["data"], _dataset(config)
    pools = dataset.pool_per_class
    train = data["train_per_class"] or pools["train"]
    test = data.get("test_per_class") or pools["test"]
    return dataset.n_classes * train, dataset.n_classes * test


@dataclass(frozen=True)
class JobCosts:
    """mem_mb and runtime of every rule's jobs for one validated config."""

    config: dict
    gpu: bool  # jobs run on a GPU (device cuda, or auto on a machine with one)
    # the cluster's limits (Caps.from_env in the Snakefile, then check_caps); none by default
    caps: Caps = field(default_factory=Caps)

    @property
    def plan(self) -> Plan:
        return Plan(self.config)

    @property
    def threads(self) -> int:
        """Threads of a training job: conv models use two cores well, the MLP one."""
        spec = models.MODELS[self.config["model"]["name"]]
        return 2 if spec.convs or spec.activations is not None else 1  # resnet18: its own count

    def _snapshots(self, epochs: int) -> int:
        return epochs // self.config["trajectory"]["every_epochs"] + 1

    def _paths_at_once(self) -> int:
        """Subpaths one group job holds in memory at once (vmap on GPUs, one by one on CPUs)."""
        mode = self.config["engine"].get("batched_subpaths", "auto")
        vmap = mode == "vmap" or (mode == "auto" and self.gpu)
        return self.config["schedule"]["subpaths_per_job"] if vmap else 1

    def _data_bytes(self) -> int:
        """Dataset as uint8 on disk plus float32 in memory (host copy also on GPU runs)."""
        images = sum(dataset_images(self.config))
        return images * math.prod(_dataset(self.config).input_shape) * 5

    def _training_bytes(self, paths: int, snapshots_per_path: int) -> int:
        p = n_params(self.config)
        dtype = DTYPE_BYTES[self.config["trajectory"]["dtype"]]
        # weights, gradients, momentum, a flat copy and a checkpoint being written: 6 x float32
        state = 6 * 4 * p * paths
        # the snapshot array is a memory map of the resume file; written pages stay resident
        snapshots = snapshots_per_path * p * dtype * paths
        batch = max(self.config["optimizer"]["batch_size"] * 3,  # forward + backward
                    self.config["metrics"]["eval_batch_size"])
        activations = 0 if self.gpu else batch * activations_per_image(self.config) * 4 * paths
        return state + snapshots + activations + self._data_bytes()

    def _pca_rows(self) -> int:
        """Snapshots in all: the main path's and every subpath's."""
        sched = self.config["schedule"]
        rows = self._snapshots(sched["main_epochs"])
        return rows + len(self.plan.branch_epochs) * self._snapshots(sched["subpath_epochs"])

    def _pca_args(self, chunk_rows: int) -> tuple:
        pca = self.config["pca"]
        return (pca["method"], chunk_rows, self._pca_rows(), n_params(self.config),
                pca["n_components"], DTYPE_BYTES[self.config["trajectory"]["dtype"]])

    def pca_chunk_rows(self, attempt: int = 1) -> int:
        """Chunk the PCA job uses: pca.chunk_rows, or fewer rows where that would not fit in
        its request (the memory cap); lrdecay.analysis.pca derives the same from the job's
        mem_mb."""
        return pca_chunk_rows(self.mem_mb("pca", attempt),
                              *self._pca_args(self.config["pca"]["chunk_rows"]))

    def _pca_bytes(self) -> int:
        return pca_bytes(*self._pca_args(self.config["pca"]["chunk_rows"]))

    # What each stage's jobs hold (bytes) and do (model-epochs of work, in minutes); STAGES
    # below says which stage prices which rule's jobs.
    def _main_segment_bytes(self) -> int:
        return self._training_bytes(1, self._snapshots(self.config["schedule"]["segment_epochs"]))

    def _subpath_group_bytes(self) -> int:
        return self._training_bytes(self._paths_at_once(),
                                    self._snapshots(self.config["schedule"]["subpath_epochs"]))

    def _landscape_shard_bytes(self) -> int:  # model, basis (mean, PC1, PC2), one batch
        p = n_params(self.config)
        return self._training_bytes(1, 3) - 3 * 4 * p + 3 * p * 8

    def _sharpness_bytes(self) -> int:  # the model, Lanczos's basis, a double-backward graph
        cost, p = sharpness_cost(self.config), n_params(self.config)
        graph = 0 if self.gpu else 3 * min(cost["samples"], self.config["metrics"][
            "eval_batch_size"]) * activations_per_image(self.config) * 4
        return self._training_bytes(1, 0) + (cost["max_steps"] + 2) * p * 4 + graph

    def _gather_bytes(self) -> int:  # the main trajectory is copied segment by segment
        dtype = DTYPE_BYTES[self.config["trajectory"]["dtype"]]
        return (self._snapshots(self.config["schedule"]["segment_epochs"])
                * n_params(self.config) * dtype * 2)

    def _prepare_data_bytes(self) -> int:  # the whole source dataset, decoded, then the subset
        return self._data_bytes() * 2

    def _table_bytes(self) -> int:  # tables and figures
        return 50 * MB

    def _per_epoch_minutes(self) -> float:
        cpu, gpu = models.cost(self.config["model"]["name"])
        return (gpu if self.gpu else cpu) * dataset_images(self.config)[0] / 1000

    def _training_epoch_minutes(self) -> float:
        """A training epoch's minutes; with label noise one more forward pass over the training
        set (clean and flipped metrics), a third of an epoch's forward and backward as in the
        landscape's estimate."""
        noise = 1 / 3 if self.config["data"]["label_noise"] > 0 else 0
        return self._per_epoch_minutes() * (1 + noise)

    def _main_segment_minutes(self) -> float:
        return self.config["schedule"]["segment_epochs"] * self._training_epoch_minutes()

    def _subpath_group_minutes(self) -> float:
        sched = self.config["schedule"]
        return sched["subpaths_per_job"] * sched["subpath_epochs"] * self._training_epoch_minutes()

    def _landscape_shard_minutes(self) -> float:  # one evaluation of train and test per point
        train, test = dataset_images(self.config)
        points = math.ceil(self.plan.grid_points / self.plan.n_shards)
        return points * self._per_epoch_minutes() * (train + test) / train / 3

    def _sharpness_minutes(self) -> float:  # every point at its max_steps products
        return sharpness_cost(self.config)["epochs"] * self._per_epoch_minutes()

    def _pca_minutes(self) -> float:  # thin SVDs: rows x block x params x 4 flops at 2 GFLOP/s
        method, chunk, rows, p, k, _ = self._pca_args(self.pca_chunk_rows())
        return rows * pca_block_rows(method, chunk, rows, k) * p * 4 / 2e9 / 60

    def _gather_minutes(self) -> float:  # reading and writing at 50 MB/s
        return self._gather_bytes() / (50 * MB) / 60

    def _prepare_data_minutes(self) -> float:
        return self._prepare_data_bytes() / (50 * MB) / 60

    def _main_segment_epochs(self) -> float:
        return self.config["schedule"]["segment_epochs"]

    def _subpath_group_epochs(self) -> float:  # K subpaths trained at once count as one epoch
        sched = self.config["schedule"]
        return sched["subpaths_per_job"] * sched["subpath_epochs"] / self._paths_at_once()

    def _toy_checks_bytes(self) -> int:
        return toy_checks_bytes(self.config)

    def _toy_figure3_bytes(self) -> int:  # a few float64 grids of grid_points^2, the canvas
        return 8 * 20 * self.config["toy"]["grid_points"] ** 2 + 150 * MB

    def _toy_figures_bytes(self) -> int:  # rendering; the traces of every gamma are small
        return 150 * MB

    def stage(self, rule: str) -> Stage:
        """The declaration that prices `rule`'s jobs (STAGES; the message names the fix)."""
        try:
            return STAGES[rule]
        except KeyError:
            raise KeyError(f"rule {rule!r} declares no stage: add it to "
                           f"lrdecay.config.resources.STAGES "
                           "(what its jobs hold and do, whether they use torch or a GPU)") from None

    def mem_mb(self, rule: str, attempt: int = 1) -> int:
        """Memory to request for a job of `rule`, in MB; grows with each retry, up to the cap."""
        return self.caps.mem_mb(self.mem_estimate(rule, attempt))

    def mem_estimate(self, rule: str, attempt: int = 1) -> int:
        """Memory a job of `rule` is modelled to need (MB, no cap), times the attempt: its
        stage's start-up, a CUDA context where it runs on the GPU, what it holds."""
        stage = self.stage(rule)
        cuda = CUDA_MB if self.gpu and stage.gpu else 0
        need = stage.base_mb + cuda + SLACK * stage.holds(self) / MB
        return int(math.ceil(need / 100) * 100) * attempt

    def _work_minutes(self, rule: str) -> float:
        return self.stage(rule).works(self)

    def runtime(self, rule: str, attempt: int = 1) -> int:
        """Wall-clock minutes to request for a job of `rule`; doubles with each retry, up to
        the cap."""
        return self.caps.runtime(self.runtime_estimate(rule, attempt))

    def runtime_estimate(self, rule: str, attempt: int = 1) -> int:
        """Minutes a job of `rule` is modelled to take with its safety margin (no cap), doubled
        for each retry."""
        minutes = OVERHEAD_MIN + TIME_SAFETY * self._work_minutes(rule)
        return int(math.ceil(minutes)) * 2 ** (attempt - 1)

    def checkpoint_minutes(self, rule: str) -> float:
        """Most work a killed training job loses: engine.checkpoint_seconds and the epoch that
        ends it (the state is saved at the first epoch boundary after the interval; one epoch
        of a group job is its K subpaths' epoch when it trains them at once), with the margin."""
        epochs = self.stage(rule).epochs
        if epochs is None:
            raise ValueError(f"rule {rule!r} does not resume after a kill (its stage in "
                             "lrdecay.config.resources.STAGES has no epochs)")
        epoch = TIME_SAFETY * self._work_minutes(rule) / epochs(self)
        return self.config["engine"]["checkpoint_seconds"] / 60 + epoch

    def continuations(self, rule: str) -> int:
        """Resubmissions a training job needs to finish when its runtime is capped: each
        attempt runs the cap, loses start-up and at most one checkpoint interval of work."""
        cap = self.caps.max_runtime
        need = self.runtime_estimate(rule)
        if not self.stage(rule).resumable or cap is None or need <= cap:
            return 0
        progress = cap - OVERHEAD_MIN - self.checkpoint_minutes(rule)
        return math.ceil((need - OVERHEAD_MIN) / progress) - 1

    def retries(self, rule: str, execution: object | None) -> int | None:
        """The rule's `retries:`: the continuations of a time-capped training job on top of the
        profile's retries (`execution`: Snakemake's execution settings, None in a dry run), for
        jobs that die; None (the profile's retries) for a job the cap does not cut."""
        extra = self.continuations(rule)
        return (getattr(execution, "retries", 0) or 0) + extra if extra else None


def _nothing(costs: JobCosts) -> float:
    return 0


@dataclass(frozen=True)
class Stage:
    """What a rule's jobs are, declared once per rule in STAGES and read by the cost model, the
    rule's resources (workflow/rules/common.smk: stage_resources) and `lrdecay describe`: their
    start-up memory, what they hold and how long they work, whether they run on the GPU where
    there is one (gpu resource, CUDA context, the GPU partition) and whether they resume after a
    kill (epochs: the epochs one job trains, its checkpoints falling between them)."""

    base_mb: int  # resident before any work: BASE_MB with torch, LIGHT_BASE_MB without
    holds: Callable[[JobCosts], float] = JobCosts._table_bytes  # bytes at the peak
    works: Callable[[JobCosts], float] = _nothing  # minutes of work, before the margin
    gpu: bool = False
    epochs: Callable[[JobCosts], float] | None = None

    @property
    def resumable(self) -> bool:
        return self.epochs is not None


TRAINING = {"base_mb": BASE_MB, "gpu": True}  # torch jobs on the GPU where there is one
STAGES: dict[str, Stage] = {
    "prepare_data": Stage(BASE_MB, JobCosts._prepare_data_bytes, JobCosts._prepare_data_minutes),
    "main_segment": Stage(**TRAINING, holds=JobCosts._main_segment_bytes,
                          works=JobCosts._main_segment_minutes,
                          epochs=JobCosts._main_segment_epochs),
    "subpath_group": Stage(**TRAINING, holds=JobCosts._subpath_group_bytes,
                           works=JobCosts._subpath_group_minutes,
                           epochs=JobCosts._subpath_group_epochs),
    "gather_training": Stage(LIGHT_BASE_MB, JobCosts._gather_bytes, JobCosts._gather_minutes),
    "decay_timing": Stage(LIGHT_BASE_MB),
    "pca": Stage(PCA_BASE_MB, JobCosts._pca_bytes, JobCosts._pca_minutes),
    "landscape_shard": Stage(**TRAINING, holds=JobCosts._landscape_shard_bytes,
                             works=JobCosts._landscape_shard_minutes),
    "landscape_gather": Stage(BASE_MB),
    "landscape_surface": Stage(BASE_MB),
    "sharpness": Stage(**TRAINING, holds=JobCosts._sharpness_bytes,
                       works=JobCosts._sharpness_minutes),
    "claims": Stage(LIGHT_BASE_MB),
    "run_tables": Stage(LIGHT_BASE_MB),
    "figure1": Stage(LIGHT_BASE_MB),
    "figure2": Stage(LIGHT_BASE_MB),
    "figure_mechanism": Stage(LIGHT_BASE_MB),
    "summary": Stage(LIGHT_BASE_MB),
    # a sweep's comparison across points (lrdecay.config.sweep)
    "sweep_table": Stage(LIGHT_BASE_MB),
    "sweep_figure": Stage(LIGHT_BASE_MB),
    # Section 3's toy model (lrdecay.toy): NumPy, SciPy and Matplotlib, no torch; seconds to a
    # minute on every preset, so start-up (OVERHEAD_MIN) is their whole time
    "toy_checks": Stage(LIGHT_BASE_MB, JobCosts._toy_checks_bytes),
    "toy_table": Stage(LIGHT_BASE_MB, _nothing),
    "toy_figure3": Stage(LIGHT_BASE_MB, JobCosts._toy_figure3_bytes),
    "toy_figures": Stage(LIGHT_BASE_MB, JobCosts._toy_figures_bytes),
}
RESUMABLE_RULES = tuple(rule for rule, stage in STAGES.items() if stage.resumable)
GPU_RULES = tuple(rule for rule, stage in STAGES.items() if stage.gpu)


def check_caps(costs: JobCosts) -> None:
    """Refuse caps under which a job cannot finish, before any job runs: PCA's smallest chunk
    above the memory cap, a checkpoint interval that leaves a capped training job no progress."""
    caps, config = costs.caps, costs.config
    if caps.max_mem_mb is not None:
        pca = config["pca"]
        low = pca_min_chunk(pca["method"], pca["n_components"])
        need = pca_need_mb(*costs._pca_args(low))
        if need > caps.max_mem_mb:
            other = "incremental" if pca["method"] == "exact" else None
            raise CapsError(
                f"{CAP_ENV['max_mem_mb']} = {caps.max_mem_mb}: the PCA job needs {need} MB even "
                f"with its smallest chunk (pca.chunk_rows = {low}, pca.method = "
                f"{pca['method']}). Fix: raise {CAP_ENV['max_mem_mb']} to at least {need}"
                + (f", or set pca.method: {other} (it streams the snapshots)" if other else "")
                + ", or store fewer snapshots (trajectory.every_epochs, trajectory.dtype)")
    if caps.max_runtime is None:
        return
    for rule in RESUMABLE_RULES:
        if costs.runtime_estimate(rule) <= caps.max_runtime:
            continue
        interval = costs.checkpoint_minutes(rule)
        # start-up, then at least two checkpoint intervals: half of each attempt is kept
        least = OVERHEAD_MIN + 2 * interval
        if caps.max_runtime < least:
            seconds = config["engine"]["checkpoint_seconds"]
            epoch = interval - seconds / 60
            allowed = int(((caps.max_runtime - OVERHEAD_MIN) / 2 - epoch) * 60)
            lower = (f"set config key engine.checkpoint_seconds to at most {allowed} or "
                     if allowed >= 0 else "")
            raise CapsError(
                f"{CAP_ENV['max_runtime']} = {caps.max_runtime} minutes: a {rule} job is capped "
                f"there and resubmitted to go on, but it saves its state only every "
                f"{interval:.1f} minutes (config key engine.checkpoint_seconds = {seconds:g} "
                f"plus one epoch of about {epoch:.1f} minutes), so after {OVERHEAD_MIN} minutes "
                "of start-up a resubmission would redo most of what the last one did. Fix: "
                f"{lower}raise {CAP_ENV['max_runtime']} to at least {math.ceil(least)}")


def sharpness_cost(config: dict) -> dict:
    """What lrdecay.analysis.sharpness does per seed: `points` (branch points and subpath ends), at
    most `max_steps` Hessian-vector products each on `samples` training images, each product about
    two forward-backward passes: at most `epochs_per_point` model-epochs of work per point."""
    cfg, plan = config["sharpness"], Plan(config)
    n_train = dataset_images(config)[0]
    samples = min(cfg["samples"], n_train)
    points = 2 * len(plan.branch_epochs)
    per_point = 2 * cfg["max_steps"] * samples / n_train
    return {"points": points, "samples": samples, "max_steps": cfg["max_steps"],
            "tol": cfg["tol"], "epochs_per_point": per_point, "epochs": points * per_point}


def toy_checks_bytes(config: dict) -> int:
    """Bytes toy_checks holds beyond the interpreter: the replicas' weights and their copies
    (replicas x d), the recorded per-replica scalars (replicas x records) and a block of drawn
    minibatches (at least 16 steps x replicas x batch x d, simulate.sgd); float64: ~10
    weight-sized temporaries, 8 recorded quantities, block inputs and labels. The interpreter
    with NumPy, SciPy and Matplotlib, without torch (measured 106-137 MB after the imports), is
    LIGHT_BASE_MB."""
    toy = config["toy"]
    replicas = max(toy["replicas"], toy["mixing_replicas"])
    records = toy["record_points"] + toy["lemma_records"]
    block = max(2**20, 16 * replicas * toy["batch_size"] * toy["d"])
    return 8 * (10 * replicas * toy["d"] + 8 * replicas * records + 3 * block)


def toy_mem_mb(config: dict, rule: str, attempt: int = 1) -> int:
    """Memory (MB) for a toy-model job (lrdecay.toy), growing with each retry (its stage)."""
    return JobCosts(config, gpu=False).mem_estimate(rule, attempt)


def toy_runtime(rule: str, attempt: int = 1) -> int:
    """Minutes for a toy-model job (seconds to a minute on every preset); doubles on retry."""
    return JobCosts({}, gpu=False).runtime_estimate(rule, attempt)
