"""Snakemake job: prepare the run's dataset (lrdecay.data.prepare), seeded by data.seed."""

from lrdecay import data, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
data.prepare(sm.params.data, sm.params.data["seed"], sm.output.data)
