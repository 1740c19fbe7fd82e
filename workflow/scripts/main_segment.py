"""Snakemake job: train one main-path segment (lrdecay.train.run_main_segment)."""

from lrdecay import config, gpu, lock, logs, train

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
# One copy of this job at a time: one left running by a killed Snakemake is named, not raced.
with (lock.job(config.Plan(sm.config).run_dir, f"{sm.rule}-{sm.wildcards.end}"),
      gpu.device_slot(sm.config["device"])):
    train.run_main_segment(sm.config, sm.input.data, int(sm.wildcards.end), sm.output[0],
                           sm.config["device"], sm.config["engine"]["threads"] or sm.threads)
