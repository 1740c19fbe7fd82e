"""Snakemake job: Figures 1a-1c (first seed) and Figure 1d with its error bands, drawn from the
decay-timing table across seeds that rule run_tables computed (lrdecay.analysis.figures)."""

import pandas as pd

from lrdecay.analysis import figures
from lrdecay.core import logs
from lrdecay.training import trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
metrics = trajectories.load_metrics(sm.input.metrics, {"schedule": sm.params.schedule})
figures.save(figures.learning_curves(metrics), *sm.output.fig1a)
figures.save(figures.subpath_contour(metrics, "train_loss", "train loss"), *sm.output.fig1b)
figures.save(figures.subpath_contour(metrics, "test_loss", "test loss"), *sm.output.fig1c)
figures.save(figures.decay_timing(pd.read_csv(sm.input.timing)), *sm.output.fig1d)
