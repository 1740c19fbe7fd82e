"""Snakemake job: Figure 2 (a, b), loss landscapes with trajectories (lrdecay.figures)."""

import pandas as pd

from lrdecay import figures, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
grid, coords = pd.read_csv(sm.input.grid), pd.read_csv(sm.input.coordinates)
figures.save(figures.landscape(grid, coords, "train_loss", "train loss"), *sm.output.fig2a)
figures.save(figures.landscape(grid, coords, "test_loss", "test loss"), *sm.output.fig2b)
