"""Snakemake job: prepare the run's dataset (lrdecay.training.data.prepare), seeded by data.seed."""

from lrdecay.core import logs
from lrdecay.training import data

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
data.prepare(sm.params.data, sm.params.data["seed"], sm.output.data)
