"""Snakemake job: the sweep's comparison figure, drawn from sweep.csv
(lrdecay.analysis.comparison)."""

import pandas as pd

from lrdecay.analysis import comparison, figures
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
figures.save(comparison.figure(pd.read_csv(sm.input.table)), sm.output.png, sm.output.pdf)
