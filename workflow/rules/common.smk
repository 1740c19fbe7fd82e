# Config validation and the helpers that turn config into file lists (one place, no lambdas
# scattered through rules). lrdecay.config.Plan is the single source of epochs, jobs and layout.
import sys
from shutil import which

sys.path.insert(0, workflow.basedir)  # import the package from this checkout even if not installed

from snakemake.utils import min_version, validate

import lrdecay.config

min_version("8.20")

try:
    lrdecay.config.validate(config)  # readable errors, defaults, cross-field rules
except lrdecay.config.ConfigError as err:
    raise WorkflowError(str(err)) from None
# Snakemake's own validator on the same schemas (defaults are already in; this guards the rest).
validate(config, "../schemas/config.schema.yaml")
validate(config["toy"], "../schemas/toy.schema.yaml")

PLAN = lrdecay.config.Plan(config)
RUN_DIR = str(PLAN.run_dir)
# GPU jobs get resources gpu=1, so `--resources gpu=N` caps them and SLURM requests a GPU.
# device "auto" counts as GPU where an NVIDIA driver is installed (cheap: torch is not imported).
GPU = int(config["device"] == "cuda" or (config["device"] == "auto" and bool(which("nvidia-smi"))))
CONDA_ENV = "../envs/lrdecay.yaml"  # relative to the rule files in workflow/rules/


wildcard_constraints:
    end=r"\d{4}",
    group=r"\d{3}",
    shard=r"\d{3}",





# Resources per job, by model (the scientific config stays free of them). Runtime is in minutes
# per epoch on the configured device; retries (attempt > 1) ask for more memory and time.
MODEL_COST = {  # model: (mem_mb, cpu minutes per epoch, gpu minutes per epoch, threads)
    "mlp": (1000, 0.01, 0.01, 1),
    "vgg_small": (4000, 0.5, 0.02, 2),
    "vgg11": (12000, 20.0, 0.1, 2),
}
_MEM, _CPU_MIN, _GPU_MIN, TRAIN_THREADS = MODEL_COST[config["model"]["name"]]
_MIN_PER_EPOCH = _GPU_MIN if GPU else _CPU_MIN


def mem_mb(wildcards, attempt):
    return _MEM * attempt


def runtime_for(epochs):
    """A runtime resource (minutes) for a job of `epochs` epochs, doubled on each retry."""

    def runtime(wildcards, attempt):
        return int(10 + epochs * _MIN_PER_EPOCH * 1.5) * 2 ** (attempt - 1)

    return runtime


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
FIGURES = ["fig1a_learning_curves", "fig1b_subpath_train_loss", "fig1c_subpath_test_loss",
           "fig1d_decay_timing", "fig2a_landscape_train", "fig2b_landscape_test"]

NN_TARGETS = [
    f"{RUN_DIR}/metrics.csv",
    f"{RUN_DIR}/decay_timing.csv",
    f"{RUN_DIR}/pca/explained_variance.csv",
    f"{RUN_DIR}/pca/coordinates.csv",
    f"{RUN_DIR}/landscape/grid.csv",
    *[f"{RUN_DIR}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")],
]
