"""Snakemake job: join the landscape shards into one table (lrdecay.analysis.landscape.gather)."""

from lrdecay.analysis import landscape
from lrdecay.core import logs

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
landscape.gather(list(snakemake.input.shards), snakemake.output[0])  # noqa: F821
