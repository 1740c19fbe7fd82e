"""Snakemake job: evaluate one shard of the landscape grid
(lrdecay.analysis.landscape.evaluate_shard)."""

from lrdecay.analysis import landscape
from lrdecay.core import gpu, logs
from lrdecay.study import plan

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# the seed's config, from what the rule declares (and how to run it)
cfg = plan.job_config(sm.params, plan.engine_run(sm.config), plan.LANDSCAPE)
with gpu.device_slot(cfg["device"]):
    landscape.evaluate_shard(cfg, sm.input.data, sm.input.basis, sm.input.coordinates,
                             int(sm.wildcards.shard), sm.params.n_shards, sm.output[0],
                             cfg["device"], cfg["engine"]["threads"] or sm.threads)
