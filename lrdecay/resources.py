"""Memory (mem_mb) and time (runtime, minutes) each job asks for, derived from the config.

SLURM kills a job that outgrows its request and queues a large request longer, so the numbers
follow what the job holds: the model's parameters (weights, gradients, optimiser state), the
snapshots it writes, the dataset, activations of one batch, and for PCA the rows it stacks.
tests/test_resources.py runs small jobs and checks each estimate against the measured peak RSS.
Retries ask for more: memory grows linearly with the attempt, time doubles.

Plain arithmetic on the config; what depends on the model or the dataset (parameter count, cost,
input shape, pool sizes) comes from their registries, lrdecay.models.MODELS and
lrdecay.data.DATASETS, so a registered model or dataset gets requests without an edit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lrdecay import models
from lrdecay.data import DATASETS, DatasetSpec
from lrdecay.plan import Plan

TOY_PREFIX = "toy_"  # the Section 3 toy model's rules (toy.smk): their own cost model, below
# Jobs that run on the GPU where there is one (the rules whose resources say gpu=GPU).
GPU_RULES = ("main_segment", "subpath_group", "landscape_shard", "sharpness")
# Resident memory of a job before it does any work: Python with torch, numpy, pandas and
# scikit-learn imported (measured 550-650 MB on Linux x86-64, torch 2.x CPU build).
BASE_MB = 800
# Jobs that never import torch (tables, PCA, figures: Python with numpy, pandas, SciPy,
# scikit-learn or Matplotlib) start far lower: measured 75-200 MB on the tiny preset.
LIGHT_BASE_MB = 200
# PCA's scikit-learn and LAPACK workspace on top: the incremental fit of 661 x 60 010 snapshots
# peaked at 857 MB where its modelled blocks come to 585 MB.
PCA_BASE_MB = 400
TORCH_RULES = (*GPU_RULES, "prepare_data", "landscape_gather", "landscape_surface")
# Host memory a job adds once it has created a CUDA context (driver, cuBLAS/cuDNN handles).
CUDA_MB = 3000
# Multiplier over the sum of the known terms: allocator slack, temporary copies we do not model.
SLACK = 1.3
MB = 2**20
DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}

# Every job is given this much on top (start-up, reading inputs, writing checkpoints).
OVERHEAD_MIN = 10
TIME_SAFETY = 2.0


def _dataset(config: dict) -> DatasetSpec:
    return DATASETS[config["data"]["name"]]


def n_params(config: dict) -> int:
    """Number of trainable parameters of the configured model (as lrdecay.models builds it)."""
    dataset = _dataset(config)
    return models.n_params(config["model"], dataset.input_shape, dataset.n_classes)


def activations_per_image(config: dict) -> int:
    """Floats one image's forward pass keeps for the backward pass (sum of layer outputs)."""
    model, dataset = config["model"], _dataset(config)
    shape, convs = dataset.input_shape, models.MODELS[model["name"]].convs
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

    @property
    def plan(self) -> Plan:
        return Plan(self.config)

    @property
    def threads(self) -> int:
        """Threads of a training job: conv models use two cores well, the MLP one."""
        return 2 if models.MODELS[self.config["model"]["name"]].convs else 1

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

    def _pca_rows(self) -> tuple[int, int]:
        """(snapshots in all, rows of one block): components + one chunk (incremental), or a
        chunk of the projection (exact)."""
        sched, pca = self.config["schedule"], self.config["pca"]
        rows = self._snapshots(sched["main_epochs"])
        rows += len(self.plan.branch_epochs) * self._snapshots(sched["subpath_epochs"])
        if pca["method"] == "exact":
            return rows, min(pca["chunk_rows"], rows)
        return rows, min(pca["chunk_rows"], rows) + pca["n_components"] + 1

    def _pca_bytes(self) -> int:
        rows, block = self._pca_rows()
        p = n_params(self.config)
        if self.config["pca"]["method"] == "exact":
            # lrdecay.pca._fit_exact: the Gram (or covariance) matrix with eigh's copy and
            # workspace; a block (chunk_rows snapshots' worth of values) read as float64 with
            # its per-file parts; the components and their QR. The mapped trajectory pages it
            # touched stay resident. Then the projection: seven chunk-sized float64 arrays.
            small, k = min(rows, p), self.config["pca"]["n_components"]
            fit = 3 * small * small * 8 + (3 * block + 3 * k) * p * 8
            mapped = rows * p * DTYPE_BYTES[self.config["trajectory"]["dtype"]]
            return mapped + max(fit, 7 * block * p * 8)
        # Measured about seven block-sized float64 arrays at once: the chunks read (as float64),
        # their concatenation, scikit-learn's validated copy, the stacked block, the SVD's copy
        # and factors (and as many while projecting: centred rows, in-plane part, residual).
        return 7 * block * p * 8

    def _bytes(self, rule: str) -> int:
        sched, p = self.config["schedule"], n_params(self.config)
        if rule == "main_segment":
            return self._training_bytes(1, self._snapshots(sched["segment_epochs"]))
        if rule == "subpath_group":
            return self._training_bytes(self._paths_at_once(),
                                        self._snapshots(sched["subpath_epochs"]))
        if rule == "landscape_shard":  # model, basis (mean, PC1, PC2), one evaluation batch
            return self._training_bytes(1, 3) - 3 * 4 * p + 3 * p * 8
        if rule == "pca":
            return self._pca_bytes()
        if rule == "sharpness":  # the model, Lanczos's basis, a double-backward graph
            cost = sharpness_cost(self.config)
            graph = 0 if self.gpu else 3 * min(cost["samples"], self.config["metrics"][
                "eval_batch_size"]) * activations_per_image(self.config) * 4
            return self._training_bytes(1, 0) + (cost["max_steps"] + 2) * p * 4 + graph
        if rule == "gather_training":  # the main trajectory is copied segment by segment
            dtype = DTYPE_BYTES[self.config["trajectory"]["dtype"]]
            return self._snapshots(sched["segment_epochs"]) * p * dtype * 2
        if rule == "prepare_data":  # the whole source dataset, decoded, then the subset
            return self._data_bytes() * 2
        return 50 * MB  # tables and figures

    def mem_mb(self, rule: str, attempt: int = 1) -> int:
        """Memory to request for a job of `rule`, in MB; grows with each retry."""
        if rule.startswith(TOY_PREFIX):
            return toy_mem_mb(self.config, rule, attempt)
        cuda = CUDA_MB if self.gpu and rule in GPU_RULES else 0
        base = (BASE_MB if rule in TORCH_RULES else PCA_BASE_MB if rule == "pca"
                else LIGHT_BASE_MB)
        need = base + cuda + SLACK * self._bytes(rule) / MB
        return int(math.ceil(need / 100) * 100) * attempt

    def _work_minutes(self, rule: str) -> float:
        sched = self.config["schedule"]
        cpu, gpu = models.cost(self.config["model"]["name"])
        train, test = dataset_images(self.config)
        per_epoch = (gpu if self.gpu else cpu) * train / 1000
        if rule == "main_segment":
            return sched["segment_epochs"] * per_epoch
        if rule == "subpath_group":
            return sched["subpaths_per_job"] * sched["subpath_epochs"] * per_epoch
        if rule == "landscape_shard":  # one evaluation of train and test set per grid point
            points = math.ceil(self.plan.grid_points / self.plan.n_shards)
            return points * per_epoch * (train + test) / train / 3
        if rule == "sharpness":  # every point at its max_steps products
            return sharpness_cost(self.config)["epochs"] * per_epoch
        if rule == "pca":  # thin SVDs: rows x block x params x 4 flops at 2 GFLOP/s; reading
            rows, block = self._pca_rows()
            return rows * block * n_params(self.config) * 4 / 2e9 / 60
        if rule in ("gather_training", "prepare_data"):
            return self._bytes(rule) / (50 * MB) / 60  # at 50 MB/s
        return 0.0

    def runtime(self, rule: str, attempt: int = 1) -> int:
        """Wall-clock minutes to request for a job of `rule`; doubles with each retry."""
        if rule.startswith(TOY_PREFIX):
            return toy_runtime(rule, attempt)
        minutes = OVERHEAD_MIN + TIME_SAFETY * self._work_minutes(rule)
        return int(math.ceil(minutes)) * 2 ** (attempt - 1)



def sharpness_cost(config: dict) -> dict:
    """What lrdecay.sharpness does per seed: `points` (branch points and subpath ends), at most
    `max_steps` Hessian-vector products each on `samples` training images, each product about
    two forward-backward passes: at most `epochs_per_point` model-epochs of work per point."""
    cfg, plan = config["sharpness"], Plan(config)
    n_train = dataset_images(config)[0]
    samples = min(cfg["samples"], n_train)
    points = 2 * len(plan.branch_epochs)
    per_point = 2 * cfg["max_steps"] * samples / n_train
    return {"points": points, "samples": samples, "max_steps": cfg["max_steps"],
            "tol": cfg["tol"], "epochs_per_point": per_point, "epochs": points * per_point}


def toy_mem_mb(config: dict, rule: str, attempt: int = 1) -> int:
    """Memory (MB) for a toy-model job (lrdecay.toy), growing with each retry.

    The toy jobs are NumPy on a few small arrays; what scales with the config is toy_checks':
    the replicas' weights and their copies (replicas x d), the recorded per-replica scalars
    (replicas x records) and a block of drawn minibatches (at least 16 steps x replicas x batch x
    d, simulate.sgd). The rest is the interpreter with NumPy, SciPy and Matplotlib, without torch
    (measured 106-137 MB after the imports), held by LIGHT_BASE_MB.
    """
    toy = config["toy"]
    need = 0.0
    if rule == "toy_checks":
        replicas = max(toy["replicas"], toy["mixing_replicas"])
        records = toy["record_points"] + toy["lemma_records"]
        block = max(2**20, 16 * replicas * toy["batch_size"] * toy["d"])
        # float64: ~10 weight-sized temporaries, 8 recorded quantities, block inputs and labels
        need = 8 * (10 * replicas * toy["d"] + 8 * replicas * records + 3 * block)
    elif rule == "toy_figure3":  # a few float64 grids of grid_points^2, rendering the canvas
        need = 8 * 20 * toy["grid_points"] ** 2 + 150 * MB
    elif rule == "toy_figures":  # rendering; the traces of every gamma are small
        need = 150 * MB
    mb = LIGHT_BASE_MB + SLACK * need / MB
    return int(math.ceil(mb / 100) * 100) * attempt


def toy_runtime(rule: str, attempt: int = 1) -> int:
    """Minutes for a toy-model job (seconds to a minute on every preset); doubles on retry."""
    return OVERHEAD_MIN * 2 ** (attempt - 1)
