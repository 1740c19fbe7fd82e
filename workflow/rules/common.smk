# Config validation and the helpers that turn config into file lists (one place, no lambdas
# scattered through rules). lrdecay.config.Plan is the single source of epochs, jobs and layout.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # import the package from this checkout even if not installed

from snakemake.utils import min_version

import lrdecay.config

min_version("8.20")

try:
    lrdecay.config.validate(config)  # readable errors, defaults, cross-field rules
except lrdecay.config.ConfigError as err:
    raise WorkflowError(str(err)) from None

PLAN = lrdecay.config.Plan(config)
RUN_DIR = str(PLAN.run_dir)
GPU = 1 if config["device"] == "cuda" else 0


wildcard_constraints:
    end=r"\d{4}",
    group=r"\d{3}",
    shard=r"\d{3}",


NN_TARGETS = []
