"""Snakemake job: train one group of subpaths of one seed
(lrdecay.training.subpaths.run_subpath_group)."""

from lrdecay.core import gpu, lock, logs
from lrdecay.study import plan
from lrdecay.training import subpaths

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# the seed's config, from what the rule declares (and how to run it)
cfg = plan.job_config(sm.params, plan.engine_run(sm.config), plan.SUBPATHS)
# One copy of this job at a time: one left running by a killed Snakemake is named, not raced.
with (lock.job(plan.Plan(cfg).run_dir, f"{sm.rule}-seed-{cfg['seed']}-{sm.wildcards.group}"),
      gpu.device_slot(cfg["device"])):
    subpaths.run_subpath_group(cfg, sm.input.data, int(sm.wildcards.group), sm.output[0],
                               cfg["device"], cfg["engine"]["threads"] or sm.threads)
