# A sweep's setup (config key sweep, lrdecay.config.sweep), for workflow/rules/sweep.smk: the
# Snakefile's study once per point, as a Snakemake module with the point's config, its rules prefixed point<i>_ and its outputs in
# <run>/<point>/; the main path once per set of points that differ only in subpath keys (modules
# main<i>, in <run>/main-path.../), whose checkpoints the points' subpath jobs read (config key
# main_path_dir); then the comparison table and figure across points.
import os
from pathlib import Path

import lrdecay.config.validate
import lrdecay.core.gpu
import lrdecay.core.io
import lrdecay.core.lock
import lrdecay.study.plan
import lrdecay.config.sweep
import lrdecay.tooling.dvcgen

try:
    lrdecay.config.validate.check_files(workflow.configfiles)
    lrdecay.config.validate.validate(config)  # the run's own keys, as for one study
    # every point's config, validated before any job
    SWEEP = lrdecay.config.sweep.expand(config)
    lrdecay.core.io.check_no_links(SWEEP.run_dir)
except (lrdecay.config.validate.ConfigError, lrdecay.core.io.UnsafePathError) as err:
    raise WorkflowError(str(err)) from None
SWEEP_DIR = str(SWEEP.run_dir)
STUDY = os.path.join(workflow.basedir, "Snakefile")
RUN_LOCKS = (
    []
)  # the sweep folder's lock, held until Snakemake exits (lrdecay.core.lock)


onstart:
    # as for one study (workflow/rules/common.smk): no cuda jobs here without a GPU, one owner
    if (
        config["device"] == "cuda"
        and workflow.local_exec
        and not workflow.touch
        and lrdecay.core.gpu.count_devices() == 0
    ):
        raise WorkflowError(
            "config key device = cuda, but this machine has no GPU (nvidia-smi lists none) "
            "and the jobs would run here; no job has run. Set device: cpu or auto."
        )
    try:
        RUN_LOCKS.append(lrdecay.core.lock.hold_run(SWEEP.run_dir))
    except lrdecay.core.lock.LockHeld as err:
        raise WorkflowError(str(err)) from None


include: "sweep_functions.smk"


# What a sweep builds (the Snakefile's rule all): the comparison, and each point's tables.
SWEEP_TARGETS = [
    str(SWEEP.table),
    str(SWEEP.figure("png")),
    *[point_file(p, "decay_timing.csv") for p in SWEEP.points],
    *[point_file(p, "claims.csv") for p in SWEEP.points],
    *point_seed_files("decay_timing.csv"),
]


# The shared main paths: only their data and main-path rules.
for MAIN in SWEEP.mains:
    workflow.module(MAIN.module, snakefile=STUDY, config=MAIN.config)
    workflow.userule(
        rules=("*",),
        from_module=MAIN.module,
        exclude_rules=("all",),
        name_modifier=f"{MAIN.module}_*",
    )(lambda: None)
# The points: every rule but the main path's (theirs is shared; main_path_dir names it).
for POINT in SWEEP.points:
    workflow.module(POINT.module, snakefile=STUDY, config=POINT.config)
    workflow.userule(
        rules=("*",),
        from_module=POINT.module,
        exclude_rules=("all", "main_segment"),
        name_modifier=f"{POINT.module}_*",
    )(lambda: None)
