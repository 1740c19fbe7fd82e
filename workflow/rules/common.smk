# Config validation and the helpers that turn config into file lists (one place, no lambdas
# scattered through rules). lrdecay.config.Plan is the single source of epochs, jobs and layout.
import sys
from shutil import which

# import the package from this checkout even if not installed
sys.path.insert(0, workflow.basedir)

from snakemake.utils import min_version

import lrdecay.config
import lrdecay.lock

min_version("8.20")

try:
    # Snakemake read the config files with a loader that keeps the last of two equal keys.
    lrdecay.config.check_files(workflow.configfiles)
    # The one validation path (as lrdecay.config.load): the schemas in lrdecay/schemas/ with
    # readable errors and their defaults, cross-field rules, the toy model's rules.
    lrdecay.config.validate(config)
except lrdecay.config.ConfigError as err:
    raise WorkflowError(str(err)) from None
RUN_LOCKS = []  # the run folder's lock, held until Snakemake exits (lrdecay.lock)


onstart:
    # Only runs that execute jobs own the folder (not dry runs, nor the jobs on cluster nodes).
    try:
        RUN_LOCKS.append(lrdecay.lock.hold_run(lrdecay.config.Plan(config).run_dir))
    except lrdecay.lock.LockHeld as err:
        raise WorkflowError(str(err)) from None


PLAN = lrdecay.config.Plan(config)
RUN_DIR = str(PLAN.run_dir)
# GPU jobs get resources gpu=1, so `--resources gpu=N` caps them and SLURM requests a GPU.
# device "auto" counts as GPU where an NVIDIA driver is installed (cheap: torch is not imported).
GPU = int(
    config["device"] == "cuda"
    or (config["device"] == "auto" and bool(which("nvidia-smi")))
)
CONDA_ENV = "../envs/lrdecay.yaml"  # relative to the rule files in workflow/rules/


wildcard_constraints:
    end=r"\d{4}",
    group=r"\d{3}",
    shard=r"\d{3}",


import os

import lrdecay.resources

# Resources per job (lrdecay.resources): mem_mb and runtime follow from the config (model,
# snapshots, chunk size, epochs, device) and grow on each retry (attempt > 1).
COSTS = lrdecay.resources.JobCosts(config, gpu=bool(GPU))
TRAIN_THREADS = COSTS.threads
# SLURM partition of the GPU-capable jobs (training, landscape), read where snakemake starts:
# LRDECAY_SLURM_GPU_PARTITION when they run on a GPU, else LRDECAY_SLURM_PARTITION, which
# profiles/slurm gives every other job; so CPU-only work never queues in the GPU partition.
CPU_PARTITION = os.environ.get("LRDECAY_SLURM_PARTITION", "")
TRAIN_PARTITION = (
    os.environ.get("LRDECAY_SLURM_GPU_PARTITION", "") if GPU else CPU_PARTITION
)
# Figures' PDFs carry their creation date unless this is set: fixed, they are byte-stable.
os.environ.setdefault("SOURCE_DATE_EPOCH", "0")


def mem_mb(rule):
    """mem_mb resource of `rule`'s jobs, by attempt."""
    return lambda wildcards, attempt: COSTS.mem_mb(rule, attempt)


def runtime(rule):
    """runtime resource (minutes) of `rule`'s jobs, by attempt."""
    return lambda wildcards, attempt: COSTS.runtime(rule, attempt)


# The config sections a training job's numbers depend on (its params: a change reruns it).
TRAINING_KEYS = "seed model loss optimizer schedule metrics trajectory".split()
TRAINING_PARAMS = {key: config[key] for key in TRAINING_KEYS}


def segment_input(wildcards):
    """The previous main-path segment (none for the initial state)."""
    end = int(wildcards.end)
    return [] if end == 0 else [str(PLAN.segment_dir(PLAN.segment_start(end)))]


def group_inputs(wildcards):
    """Main-path segments that hold the branch states of this subpath group."""
    ends = {PLAN.segment_holding(b) for b in PLAN.subpath_groups[int(wildcards.group)]}
    return [str(PLAN.segment_dir(end)) for end in sorted(ends)]


def figure(name, caption):
    """PNG (shown in the report) and PDF of one figure."""
    png = report(
        f"{RUN_DIR}/figures/{name}.png",
        caption=f"../report/{caption}.rst",
        category="Figures (Section 2)",
    )
    return [png, f"{RUN_DIR}/figures/{name}.pdf"]


SEGMENT_DIRS = [str(PLAN.segment_dir(end)) for end in [0, *PLAN.segment_ends]]
GROUP_DIRS = [str(PLAN.group_dir(g)) for g in range(len(PLAN.subpath_groups))]
SHARD_FILES = [f"{RUN_DIR}/landscape/shard-{s:03d}.csv" for s in range(PLAN.n_shards)]
FIGURES = [
    "fig1a_learning_curves",
    "fig1b_subpath_train_loss",
    "fig1c_subpath_test_loss",
    "fig1d_decay_timing",
    "fig2a_landscape_train",
    "fig2b_landscape_test",
]

NN_TARGETS = [
    f"{RUN_DIR}/metrics.csv",
    f"{RUN_DIR}/decay_timing.csv",
    f"{RUN_DIR}/claims.csv",  # a verdict per Section 2 claim (lrdecay.analysis)
    f"{RUN_DIR}/trends.csv",
    f"{RUN_DIR}/pca/explained_variance.csv",
    f"{RUN_DIR}/pca/coordinates.csv",
    f"{RUN_DIR}/landscape/grid.csv",
    f"{RUN_DIR}/summary.json",  # headline numbers for `dvc metrics show` (lrdecay.summary)
    *[f"{RUN_DIR}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")],
]
