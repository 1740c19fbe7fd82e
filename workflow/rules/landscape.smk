# Loss landscape (lrdecay/analysis/landscape.py) around one seed's trajectories, split into shard jobs;
# the run asks for the first seed's (Figure 2).


rule landscape_shard:
    input:
        data=upstream(rules.prepare_data.output.data),
        basis=upstream(rules.pca.output.basis),
        coordinates=upstream(rules.pca.output.coordinates),
        code=code("landscape_shard.py"),  # the script and the lrdecay modules it imports
    output:
        str(PLAN.shard_path("{shard}", seed="{seed}")),
    log:
        f"{SEED_DIR}/logs/{lrdecay.study.layout.SHARD_JOB.pattern}.log",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        **stage_resources("landscape_shard"),
    params:
        n_shards=PLAN.n_shards,
        seed=seed_of,
        reads=LANDSCAPE_READS,
    script:
        "../scripts/landscape_shard.py"


rule landscape_gather:
    input:
        shards=shard_paths,
        code=code("landscape_gather.py"),  # the script and the lrdecay modules it imports
    output:
        report(
            f"{SEED_DIR}/landscape/grid.csv",
            caption="../report/landscape.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
    log:
        f"{SEED_DIR}/logs/landscape_gather.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("landscape_gather"),
    script:
        "../scripts/landscape_gather.py"


rule landscape_surface:
    input:
        coordinates=upstream(rules.pca.output.coordinates),
        code=code("landscape_surface.py"),  # the script and the lrdecay modules it imports
    output:
        report(
            f"{SEED_DIR}/landscape/surface.csv",
            caption="../report/surface.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
    log:
        f"{SEED_DIR}/logs/landscape_surface.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("landscape_surface"),
    params:
        landscape={"surface": config["landscape"]["surface"]},  # plane or curved (q fitted)
    script:
        "../scripts/landscape_surface.py"
