"""Snakemake job: train one main-path segment of one seed
(lrdecay.training.train.run_main_segment)."""

from lrdecay.core import gpu, lock, logs
from lrdecay.study import plan
from lrdecay.training import train

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# the seed's config, from what the rule declares (and how to run it)
cfg = plan.job_config(sm.params, plan.engine_run(sm.config), plan.MAIN_PATH)
# One copy of this job at a time: one left running by a killed Snakemake is named, not raced.
with (lock.job(plan.Plan(cfg).run_dir, f"{sm.rule}-seed-{cfg['seed']}-{sm.wildcards.end}"),
      gpu.device_slot(cfg["device"])):
    train.run_main_segment(cfg, sm.input.data, int(sm.wildcards.end), sm.output[0],
                           cfg["device"], cfg["engine"]["threads"] or sm.threads)
