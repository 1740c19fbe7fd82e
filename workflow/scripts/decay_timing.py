"""Snakemake job: one seed's decay-timing table (lrdecay.analysis.decay_timing_table)."""

import pandas as pd

from lrdecay import analysis, io, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
io.write_csv(sm.output[0], analysis.decay_timing_table(pd.read_csv(sm.input[0])))
