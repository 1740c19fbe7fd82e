# Config validation and the helpers that turn config into file lists (one place, no lambdas
# scattered through rules). lrdecay.study.plan.Plan is the single source of epochs, jobs and layout.
# The Snakefile put this checkout's package first on sys.path.
from shutil import which

from snakemake.utils import min_version

import lrdecay.config.validate
import lrdecay.core.gpu
import lrdecay.core.io
import lrdecay.study.layout
import lrdecay.core.lock
import lrdecay.study.plan

min_version("8.20")

try:
    # Snakemake read the config files with a loader that keeps the last of two equal keys.
    lrdecay.config.validate.check_files(workflow.configfiles)
    # The one validation path (as lrdecay.config.validate.load): the schemas in lrdecay/config/schemas/ with
    # readable errors and their defaults, cross-field rules, the toy model's rules.
    lrdecay.config.validate.validate(config)
    # No symbolic link inside the run folder: lrdecay makes none, and a planted one could turn
    # a job's write onto a file outside the run (each job's writes check again: lrdecay.core.io.guard).
    lrdecay.core.io.check_no_links(lrdecay.study.plan.Plan(config).run_dir)
except (lrdecay.config.validate.ConfigError, lrdecay.core.io.UnsafePathError) as err:
    raise WorkflowError(str(err)) from None
RUN_LOCKS = []  # the run folder's lock, held until Snakemake exits (lrdecay.core.lock)


onstart:
    # device: cuda where the jobs would run here, on a machine without a GPU: stop before any job
    # (a SLURM submit host sends them to GPU nodes; --touch runs nothing)
    if (
        config["device"] == "cuda"
        and workflow.local_exec
        and not workflow.touch
        and lrdecay.core.gpu.count_devices() == 0
    ):
        raise WorkflowError(
            "config key device = cuda, but this machine has no GPU (nvidia-smi lists none) and "
            "the jobs would run here (local execution); no job has run. To run here, set "
            "device: cpu or auto (--config device=cpu). On a SLURM submit host without a GPU "
            "this config is fine: submit the jobs to GPU nodes with --profile profiles/slurm "
            "(README, Scale out)."
        )
    # Only runs that execute jobs own the folder (not dry runs, nor the jobs on cluster nodes).
    try:
        RUN_LOCKS.append(
            lrdecay.core.lock.hold_run(lrdecay.study.plan.Plan(config).run_dir)
        )
    except lrdecay.core.lock.LockHeld as err:
        raise WorkflowError(str(err)) from None


PLAN = lrdecay.study.plan.Plan(config)
RUN_DIR = str(PLAN.run_dir)
# The study runs once per training seed, each under <run>/seed-<s>/ (Plan.seed_dir): rules of one
# seed's jobs take the {seed} wildcard, and their params depend on that seed alone, so adding a
# seed adds jobs and reruns none. Figures 1a-c and 2 (and the landscape) show the first seed.
SEEDS = PLAN.seeds
FIRST_SEED = SEEDS[0]
SEED_DIR = str(PLAN.seed_dir("{seed}"))  # a pattern: <run>/seed-{seed}
# GPU jobs get resources gpu=1, so `--resources gpu=N` caps them and SLURM requests a GPU.
# device "auto" counts as GPU where an NVIDIA driver is installed (cheap: torch is not imported).
GPU = int(
    config["device"] == "cuda"
    or (config["device"] == "auto" and bool(which("nvidia-smi")))
)
CONDA_ENV = "../envs/lrdecay.yaml"  # relative to the rule files in workflow/rules/


# The numbered names' widths, from their one spelling (lrdecay.study.layout).
wildcard_constraints:
    seed=r"\d+",
    end=lrdecay.study.layout.SEGMENT.constraint,
    group=lrdecay.study.layout.GROUP.constraint,
    shard=lrdecay.study.layout.SHARD.constraint,


import os
from pathlib import Path

import lrdecay.tooling.dvcgen
import lrdecay.config.resources

# Resources per job (lrdecay.config.resources): mem_mb and runtime follow from the config (model,
# snapshots, chunk size, epochs, device) and grow on each retry (attempt > 1).
# Each request is clipped to the cluster's caps (LRDECAY_MAX_MEM_MB, LRDECAY_MAX_RUNTIME), and
# caps under which a job could not finish are refused here, before any job.
try:
    COSTS = lrdecay.config.resources.JobCosts(
        config, gpu=bool(GPU), caps=lrdecay.config.resources.Caps.from_env()
    )
    lrdecay.config.resources.check_caps(COSTS)
except lrdecay.config.resources.CapsError as err:
    raise WorkflowError(str(err)) from None
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


def code(script):
    """The `code` input of the job that runs workflow/scripts/<script>; the script and every lrdecay
    module it imports, transitively (lrdecay.tooling.dvcgen.code_files, which also gives DVC's deps).
    Snakemake's own code trigger hashes only the script; as inputs, an edited module is newer
    than the outputs of exactly the jobs that run it, and their mtime trigger reruns them. Paths
    are relative to the working directory: Snakemake's record of a job's inputs does not name
    where the checkout lies."""
    base = Path(workflow.basedir)
    files = [
        os.path.relpath(base / path)
        for path in lrdecay.tooling.dvcgen.code_files(
            base, base / "workflow" / "scripts" / script
        )
    ]
    return lambda wildcards: files


def stage_resources(rule):
    """The resources of `rule`'s jobs, all read from its one declaration (its stage in
    lrdecay.config.resources.STAGES): mem_mb and runtime (minutes) by attempt, gpu (GPU where its jobs
    run on the GPU where there is one, else 0: `--resources gpu=N` caps them and SLURM requests a
    GPU) and, for those, the GPU partition."""
    stage = COSTS.stage(rule)
    declared = {
        "mem_mb": lambda wildcards, attempt: COSTS.mem_mb(rule, attempt),
        "runtime": lambda wildcards, attempt: COSTS.runtime(rule, attempt),
        "gpu": GPU if stage.gpu else 0,
    }
    if stage.gpu:
        declared["slurm_partition"] = TRAIN_PARTITION
    return declared


# What each training-type job reads (lrdecay.study.plan.Reads), as its `reads` param: every declared
# key with its value (a change reruns the job; also its DVC params). Jobs rebuild their config
# from it and the seed (lrdecay.study.plan.job_config) plus the run settings (lrdecay.study.plan.engine_run),
# which are no params: threads or checkpoint interval rerun nothing. The main path declares no
# subpath key, so a subpath ablation reruns no main-path job.
MAIN_PATH_READS = lrdecay.study.plan.MAIN_PATH.values(config)
SUBPATH_READS = lrdecay.study.plan.SUBPATHS.values(config)
PCA_READS = lrdecay.study.plan.PCA.values(config)
LANDSCAPE_READS = lrdecay.study.plan.LANDSCAPE.values(config)
SHARPNESS_READS = lrdecay.study.plan.SHARPNESS.values(config)
CLAIMS_READS = lrdecay.study.plan.CLAIMS.values(config)
# The schedule, canonical: every planned path and epoch must be in a seed's gathered metrics
# table, checked where it is gathered and wherever it is read (lrdecay.training.trajectories.load_metrics).
SCHEDULE = lrdecay.study.plan.canonical(config["schedule"])


DATA_READS = lrdecay.study.plan.DATA.values(config)["data"]


def label_noise_outputs():
    """prepare_data's extra output with data.label_noise > 0: the flipped training indices
    (and their sidecar). None at 0, so a run without label noise has the outputs it had.
    """
    if config["data"]["label_noise"] == 0:
        return {}
    path = str(PLAN.flipped_path)
    return {"flipped": path, "flipped_record": f"{path}.json"}


def label_noise_inputs():
    """The flipped indices as main_segment's input (data.label_noise > 0; none at 0)."""
    return (
        {"flipped": label_noise_outputs()["flipped"]} if label_noise_outputs() else {}
    )


def seed_of(wildcards):
    """The job's training seed (its {seed} wildcard) as a param."""
    return int(wildcards.seed)


def seed_plan(wildcards):
    """The plan of the job's seed (lrdecay.study.plan.Plan.for_seed)."""
    return PLAN.for_seed(int(wildcards.seed))


def segment_input(wildcards):
    """The previous main-path segment of this seed (none for the initial state)."""
    plan, end = seed_plan(wildcards), int(wildcards.end)
    return [] if end == 0 else [str(plan.segment_dir(plan.segment_start(end)))]


def group_inputs(wildcards):
    """This seed's main-path segments that hold the branch states of this subpath group."""
    plan = seed_plan(wildcards)
    ends = {plan.segment_holding(b) for b in plan.subpath_groups[int(wildcards.group)]}
    return [str(plan.segment_dir(end)) for end in sorted(ends)]


def segment_dirs(wildcards):
    """Every main-path segment folder of this seed (epoch 0 first)."""
    plan = seed_plan(wildcards)
    return [str(plan.segment_dir(end)) for end in [0, *plan.segment_ends]]


def group_dirs(wildcards):
    """Every subpath group folder of this seed."""
    plan = seed_plan(wildcards)
    return [str(plan.group_dir(g)) for g in range(len(plan.subpath_groups))]


def shard_paths(wildcards):
    """Every landscape shard table of this seed, in shard order."""
    return [str(PLAN.shard_path(s, seed=wildcards.seed)) for s in range(PLAN.n_shards)]


def figure(name, caption):
    """PNG (shown in the report) and PDF of one figure."""
    png = report(
        f"{RUN_DIR}/figures/{name}.png",
        caption=f"../report/{caption}.rst",
        category="Figures (Section 2)",
    )
    return [png, f"{RUN_DIR}/figures/{name}.pdf"]


def upstream(path):
    """Another rule's output (rules.<rule>.output...) as a plain path. Snakemake then finds its
    producer by pattern, among the rules a DVC stage's `--allowed-rules` leaves in; a
    rules.<rule>.output item names its rule, which Snakemake follows past `--allowed-rules` and
    reruns when checkout mtimes make it look outdated (lrdecay.tooling.dvcgen refuses it).
    """
    return str(path)


def first_seed(path):
    """`path`, a rule's output pattern with {seed}, for the first seed."""
    return expand(path, seed=FIRST_SEED)[0]


def every_seed(path):
    """`path`, a rule's output pattern with {seed}, for each seed in order."""
    return expand(path, seed=SEEDS)
