"""Snakemake job: Figures 1a-1c (first seed), the decay-timing table across seeds and Figure 1d
with its error bands (lrdecay.figures, lrdecay.analysis)."""

import pandas as pd

from lrdecay import analysis, figures, io, logs, trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
metrics = trajectories.load_metrics(sm.input.metrics, {"schedule": sm.params.schedule})
figures.save(figures.learning_curves(metrics), *sm.output.fig1a)
figures.save(figures.subpath_contour(metrics, "train_loss", "train loss"), *sm.output.fig1b)
figures.save(figures.subpath_contour(metrics, "test_loss", "test loss"), *sm.output.fig1c)
tables = {seed: pd.read_csv(path)
          for seed, path in zip(sm.params.seeds, sm.input.timings, strict=True)}
timing = analysis.aggregate_decay_timing(tables)
io.write_csv(sm.output.table, timing)
figures.save(figures.decay_timing(timing), *sm.output.fig1d)
