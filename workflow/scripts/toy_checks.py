"""Simulate one gamma of the toy model and measure every check (lrdecay.toy.checks)."""

from lrdecay.core import logs
from lrdecay.toy.pipeline import run_checks

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)

run_checks(snakemake.params.toy, float(snakemake.wildcards.gamma),  # noqa: F821
           snakemake.output.instance, snakemake.output.table, snakemake.output.traces)  # noqa: F821
