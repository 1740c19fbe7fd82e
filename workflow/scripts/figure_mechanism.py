"""Snakemake job: the norm and sharpness across seeds (lrdecay.analysis.mechanism_bands) and
their figure (lrdecay.figures.mechanism)."""

import pandas as pd

from lrdecay import analysis, figures, io, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])


def read(paths):
    return {seed: pd.read_csv(p) for seed, p in zip(sm.params.seeds, paths, strict=True)}


bands = analysis.mechanism_bands(read(sm.input.metrics), read(sm.input.sharpness))
io.write_csv(sm.output.table, bands)
figures.save(figures.mechanism(bands), *sm.output.figure)
