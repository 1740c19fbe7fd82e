"""Snakemake job: one seed's top Hessian eigenvalues (lrdecay.analysis.sharpness.evaluate)."""

from lrdecay.analysis import sharpness
from lrdecay.core import gpu, logs
from lrdecay.study import plan

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# the seed's config, from what the rule declares (and how to run it)
cfg = plan.job_config(sm.params, plan.engine_run(sm.config), plan.SHARPNESS)
with gpu.device_slot(cfg["device"]):
    sharpness.evaluate(cfg, sm.input.data, sm.output[0], cfg["device"],
                       cfg["engine"]["threads"] or sm.threads)
