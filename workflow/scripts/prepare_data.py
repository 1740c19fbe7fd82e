"""Snakemake job: prepare the run's dataset (lrdecay.data.prepare)."""

from lrdecay import data, logs

logs.setup(snakemake.log[0])  # noqa: F821 (snakemake is injected)
data.prepare(snakemake.params.data, snakemake.params.seed, snakemake.output.data)  # noqa: F821
