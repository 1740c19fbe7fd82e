"""Paper Figure 3: train/test landscapes of three models on d = 2, n = 1."""

from lrdecay.toy.figures import figure3

figure3(snakemake.output.png, snakemake.output.pdf, snakemake.params.toy["grid_points"])  # noqa: F821
