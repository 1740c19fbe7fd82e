import os
import sys

# lrdecay: the whole study of Ren, Ma & Ying (AISTATS 2024) as one DAG.
# Stages: data -> per seed (seeds: [...]): main-path segments -> subpath groups -> metrics and
# trajectories -> PCA -> landscape shards (first seed) -> across seeds: figures, claims, summary
# and report; plus the Section 3 toy model. Layout: lrdecay.study.plan.Plan.


sys.path.insert(0, workflow.basedir)  # this checkout's package, even if not installed
import lrdecay.config.validate
import lrdecay.config.sweep

# config.yaml read strictly before Snakemake loads it: a YTE template there would run code.
try:
    lrdecay.config.validate.check_files([os.path.join(workflow.basedir, "config.yaml")])
except lrdecay.config.validate.ConfigError as err:
    raise WorkflowError(str(err)) from None


configfile: os.path.join(workflow.basedir, "config.yaml")  # the quick preset, wherever snakemake runs


# A sweep (config key sweep): this Snakefile once per point, as a module with the point's
# config (lrdecay.config.sweep; workflow/rules/sweep.smk); each point's own config has no sweep key.


if lrdecay.config.sweep.SWEEP_KEY in config:

    include: "workflow/rules/sweep.smk"

    rule all:
        input:
            SWEEP_TARGETS,  # the comparison table and figure, each point's tables

else:

    report: "workflow/report/workflow.rst"

    include: "workflow/rules/common.smk"
    include: "workflow/rules/data.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/pca.smk"
    include: "workflow/rules/landscape.smk"
    include: "workflow/rules/sharpness.smk"
    include: "workflow/rules/analysis.smk"
    include: "workflow/rules/toy.smk"
    include: "workflow/rules/figures.smk"

    # Overrides of what to compute land in the preset's own folder: say so before any job.
    if workflow.is_main_process:
        OVERRIDE_NOTE = lrdecay.study.plan.override_note(
            dict(workflow.config_settings.config), PLAN.run_dir
        )
        if OVERRIDE_NOTE:
            print(f"WARNING: {OVERRIDE_NOTE}", file=sys.stderr)

    rule all:
        input:
            every_seed(rules.decay_timing.output[0]),  # each seed's tables, trajectories, PCA
            every_seed(rules.pca.output.coordinates),
            every_seed(rules.sharpness.output[0]),  # top Hessian eigenvalues per seed
            rules.run_tables.output,  # the run's tables across seeds: decay timing, norm, sharpness
            rules.figure1.output,  # Figure 1 (1d from the decay-timing table)
            rules.figure2.output,
            rules.figure_mechanism.output,  # norm and sharpness against the decay epoch
            rules.claims.output,  # a verdict per Section 2 claim (lrdecay.analysis.claims)
            rules.summary.output,  # headline numbers for `dvc metrics show` (lrdecay.analysis.summary)
            TOY_TARGETS,
