"""Snakemake job: the norm and sharpness across seeds (lrdecay.analysis.mechanism_bands) and
their figure (lrdecay.figures.mechanism)."""

import pandas as pd

from lrdecay import analysis, figures, io, logs, trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])


def read(paths, reader=pd.read_csv):
    return {seed: reader(p) for seed, p in zip(sm.params.seeds, paths, strict=True)}


schedule = {"schedule": sm.params.schedule}
metrics = read(sm.input.metrics, lambda path: trajectories.load_metrics(path, schedule))
bands = analysis.mechanism_bands(metrics, read(sm.input.sharpness))
io.write_csv(sm.output.table, bands)
figures.save(figures.mechanism(bands), *sm.output.figure)
