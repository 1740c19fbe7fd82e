"""Snakemake job: the sweep's comparison figure, drawn from sweep.csv (lrdecay.comparison)."""

import pandas as pd

from lrdecay import comparison, figures, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
figures.save(comparison.figure(pd.read_csv(sm.input.table)), sm.output.png, sm.output.pdf)
