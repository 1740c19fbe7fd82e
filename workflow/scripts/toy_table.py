"""Concatenate the per-gamma checks into the tidy checks table."""

from lrdecay.core import logs
from lrdecay.toy.pipeline import build_table

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)

build_table(list(snakemake.input.checks), snakemake.output[0])  # noqa: F821
