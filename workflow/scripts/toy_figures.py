"""Figure 4 and the extra toy figures from the per-gamma traces."""

from lrdecay.core import logs
from lrdecay.toy.figures import make_figures

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)

make_figures(snakemake.params.toy, list(snakemake.input.traces), dict(snakemake.output))  # noqa: F821
