"""Snakemake job: PCA of every snapshot of one seed (lrdecay.analysis.pca.run)."""

from lrdecay.analysis import pca
from lrdecay.core import logs
from lrdecay.study import plan
from lrdecay.training import trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
files = trajectories.trajectory_files(sm.input.main, sm.input.groups)
cfg = plan.job_config(sm.params, reads=plan.PCA)  # what the rule declares
pca.run(files, cfg["pca"], sm.output.variance, sm.output.coordinates, sm.output.basis,
        plan.TRAINING.hash(cfg), mem_mb=sm.resources.mem_mb)  # chunk fits the request
