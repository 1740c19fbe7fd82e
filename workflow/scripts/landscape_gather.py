"""Snakemake job: join the landscape shards into one table (lrdecay.landscape.gather)."""

from lrdecay import landscape, logs

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
landscape.gather(list(snakemake.input.shards), snakemake.output[0])  # noqa: F821
