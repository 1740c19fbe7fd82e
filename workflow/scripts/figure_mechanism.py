"""Snakemake job: the norm and sharpness figure (lrdecay.analysis.figures.mechanism), drawn from the
table across seeds that rule run_tables computed (norm_sharpness.csv)."""

import pandas as pd

from lrdecay.analysis import figures
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
figures.save(figures.mechanism(pd.read_csv(sm.input.bands)), *sm.output.figure)
