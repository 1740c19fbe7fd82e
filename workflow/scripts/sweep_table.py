"""Snakemake job: the sweep's comparison table across points (lrdecay.analysis.comparison.table)."""

import pandas as pd

from lrdecay.analysis import comparison
from lrdecay.core import io, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
timings = [pd.read_csv(path) for path in sm.input.timings]
io.write_csv(sm.output[0], comparison.table(sm.params.points, timings))
