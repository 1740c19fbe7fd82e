"""Snakemake job: a verdict per Section 2 claim and the trend measures over every seed
(lrdecay.analysis.claims)."""

from lrdecay.analysis import claims as analysis
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
analysis.write_claims(sm.params.seeds, sm.input.metrics, sm.input.variance, sm.input.coordinates,
                      sm.output.claims, sm.output.trends, sm.output.readable,
                      sharpness=sm.input.sharpness,
                      weight_decay=sm.params.reads["optimizer.weight_decay"],
                      schedule=sm.params.schedule)
