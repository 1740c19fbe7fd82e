"""Snakemake job: one seed's metrics table and main-path trajectory
(lrdecay.training.trajectories)."""

from pathlib import Path

from lrdecay.core import logs
from lrdecay.study import layout
from lrdecay.training import trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
csvs = [Path(d) / layout.METRICS for d in [*sm.input.segments, *sm.input.groups]]
trajectories.gather_metrics(csvs, sm.output.metrics,
                            config={"schedule": sm.params.schedule})  # checks the plan
trajectories.gather_main(sm.input.segments, sm.output.main)
