"""Snakemake job: one seed's decay-timing table (lrdecay.analysis.claims.decay_timing_table)."""

from lrdecay.analysis import claims as analysis
from lrdecay.core import io, logs
from lrdecay.training import trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
metrics = trajectories.load_metrics(sm.input.metrics, {"schedule": sm.params.schedule})
io.write_csv(sm.output[0], analysis.decay_timing_table(metrics))
