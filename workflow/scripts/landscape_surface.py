"""Snakemake job: the landscape's surface and each snapshot's distance from it
(lrdecay.analysis.landscape.write_surface)."""

from lrdecay.analysis import landscape
from lrdecay.core import logs

sm = snakemake  # noqa: F821 (injected by Snakemake)
logs.setup(sm.log[0])
landscape.write_surface(sm.params.landscape, sm.input.coordinates, sm.output[0])
