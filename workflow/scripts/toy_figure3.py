"""Paper Figure 3: train/test landscapes of three models on d = 2, n = 1."""

from lrdecay.core import logs
from lrdecay.toy.figures import figure3

logs.setup(snakemake.log[0])  # noqa: F821 (injected by Snakemake)

figure3(snakemake.output.png, snakemake.output.pdf, snakemake.params.toy["grid_points"])  # noqa: F821
