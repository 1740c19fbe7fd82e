"""Snakemake job: the run's headline numbers as DVC metrics (lrdecay.summary)."""

from lrdecay import logs, summary

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
summary.write(sm.input.timing, list(sm.input.variance), sm.input.toy, sm.output[0],
              sm.input.claims)
