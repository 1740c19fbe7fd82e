"""Snakemake job: the run-level tables across seeds, computed here so that the headline numbers
depend on analysis code only and the figures only draw them: decay_timing.csv
(lrdecay.analysis.claims.aggregate_decay_timing) and norm_sharpness.csv
(lrdecay.analysis.claims.mechanism_bands)."""

import pandas as pd

from lrdecay.analysis import claims as analysis
from lrdecay.core import io, logs
from lrdecay.training import trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])


def read(paths, reader=pd.read_csv):
    return {seed: reader(p) for seed, p in zip(sm.params.seeds, paths, strict=True)}


schedule = {"schedule": sm.params.schedule}
metrics = read(sm.input.metrics, lambda path: trajectories.load_metrics(path, schedule))
io.write_csv(sm.output.timing, analysis.aggregate_decay_timing(read(sm.input.timings)))
io.write_csv(sm.output.mechanism, analysis.mechanism_bands(metrics, read(sm.input.sharpness)))
