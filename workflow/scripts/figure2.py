"""Snakemake job: Figure 2 (a, b), loss landscapes with trajectories (lrdecay.analysis.figures)."""

import pandas as pd

from lrdecay.analysis import figures
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
grid, coords = pd.read_csv(sm.input.grid), pd.read_csv(sm.input.coordinates)
variance = pd.read_csv(sm.input.variance)
surface = pd.read_csv(sm.input.surface) if sm.input.surface else None  # none without PC3
for column, label, output in (("train_loss", "train loss", sm.output.fig2a),
                              ("test_loss", "test loss", sm.output.fig2b)):
    figures.save(figures.landscape(grid, coords, variance, column, label, surface), *output)
