# Helpers of a sweep's rules (workflow/rules/sweep_common.smk defines SWEEP and SWEEP_DIR).
import os
from pathlib import Path

import lrdecay.tooling.dvcgen
import lrdecay.config.resources


def point_file(point, relative):
    """A file of one point's study, relative to its folder."""
    return os.path.join(SWEEP_DIR, point.name, relative)


def point_seed_files(relative):
    """`relative` (below seed-<s>/) for every point and seed, points in order."""
    return [
        point_file(point, f"seed-{seed}/{relative}")
        for point in SWEEP.points
        for seed in point.config["seeds"]
    ]


def sweep_code(script):
    """The script and the lrdecay modules it imports (workflow/rules/common.smk's code())."""
    base = workflow.basedir
    files = [
        os.path.relpath(os.path.join(base, path))
        for path in lrdecay.tooling.dvcgen.code_files(
            Path(base), Path(base) / "workflow" / "scripts" / script
        )
    ]
    return lambda wildcards: files


# The sweep-level jobs are light and run on the CPU: priced like one point's (its first).
SWEEP_COSTS = lrdecay.config.resources.JobCosts(
    SWEEP.points[0].config, gpu=False, caps=lrdecay.config.resources.Caps.from_env()
)


def stage_resources(rule):
    """The resources of a sweep-level rule's jobs, read from its stage in
    lrdecay.config.resources.STAGES (as workflow/rules/common.smk's stage_resources for one study).
    """
    return {
        "mem_mb": lambda wildcards, attempt: SWEEP_COSTS.mem_mb(rule, attempt),
        "runtime": lambda wildcards, attempt: SWEEP_COSTS.runtime(rule, attempt),
        "gpu": 0,
    }
