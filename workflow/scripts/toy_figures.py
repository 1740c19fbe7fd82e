"""Figure 4 and the extra toy figures from the per-gamma traces."""

from lrdecay.toy.pipeline import make_figures

make_figures(snakemake.params.toy, list(snakemake.input.traces), dict(snakemake.output))  # noqa: F821
