import os

# lrdecay: the whole study of Ren, Ma & Ying (AISTATS 2024) as one DAG.
# Stages: data -> main-path segments -> subpath groups -> trajectories/metrics -> PCA ->
# landscape shards -> figures, claims and report; plus the Section 3 toy model.


configfile: os.path.join(workflow.basedir, "config.yaml")  # the quick preset, wherever snakemake runs


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pca.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/toy.smk"


rule all:
    input:
        NN_TARGETS,
        TOY_TARGETS,
