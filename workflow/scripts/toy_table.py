"""Concatenate the per-gamma checks into the tidy checks table."""

from lrdecay.toy.pipeline import build_table

build_table(list(snakemake.input), snakemake.output[0])  # noqa: F821
