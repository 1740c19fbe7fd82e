"""Snakemake job: train one group of subpaths (lrdecay.subpaths.run_subpath_group)."""

from lrdecay import config, gpu, lock, logs, subpaths

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# One copy of this job at a time: one left running by a killed Snakemake is named, not raced.
with (lock.job(config.Plan(sm.config).run_dir, f"{sm.rule}-{sm.wildcards.group}"),
      gpu.device_slot(sm.config["device"])):
    subpaths.run_subpath_group(sm.config, sm.input.data, int(sm.wildcards.group), sm.output[0],
                               sm.config["device"], sm.config["engine"]["threads"] or sm.threads)
