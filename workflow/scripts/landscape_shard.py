"""Snakemake job: evaluate one shard of the landscape grid (lrdecay.landscape.evaluate_shard)."""

from lrdecay import gpu, landscape, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
with gpu.device_slot(sm.config["device"]):
    landscape.evaluate_shard(sm.config, sm.input.data, sm.input.basis, sm.input.coordinates,
                             int(sm.wildcards.shard), sm.params.n_shards, sm.output[0],
                             sm.config["device"], sm.config["engine"]["threads"] or sm.threads)
