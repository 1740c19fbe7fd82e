"""Snakemake job: PCA of every snapshot of one seed (lrdecay.pca.run)."""

from lrdecay import logs, pca, plan, trajectories

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
files = trajectories.trajectory_files(sm.input.main, sm.input.groups)
pca.run(files, sm.params.pca, sm.output.variance, sm.output.coordinates, sm.output.basis,
        plan.training_hash(plan.job_config(sm.params)),
        mem_mb=sm.resources.mem_mb)  # the chunk fits the job's request (lrdecay.pca)
