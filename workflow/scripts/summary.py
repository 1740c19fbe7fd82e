"""Snakemake job: the run's numbers as JSON, the headline ones as DVC metrics
(lrdecay.analysis.summary)."""

from lrdecay.analysis import summary
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
summary.write(sm.input.timing, list(sm.input.variance), sm.input.toy, sm.output.summary,
              sm.input.claims, sm.output.headline)
