"""Snakemake job: the landscape's surface and each snapshot's distance from it
(lrdecay.landscape.write_surface)."""

from lrdecay import landscape, logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
landscape.write_surface(sm.params.landscape, sm.input.coordinates, sm.output[0])
