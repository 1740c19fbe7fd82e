# Loss landscape (lrdecay/landscape.py): grid in the PC1-PC2 plane, split into shard jobs.


rule landscape_shard:
    input:
        data=str(PLAN.data_path),
        basis=f"{RUN_DIR}/pca/basis.npy",
        coordinates=f"{RUN_DIR}/pca/coordinates.csv",
    output:
        f"{RUN_DIR}/landscape/shard-{{shard}}.csv",
    log:
        f"{RUN_DIR}/logs/landscape_shard-{{shard}}.log",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=mem_mb("landscape_shard"),
        runtime=runtime("landscape_shard"),
        gpu=GPU,
        slurm_partition=TRAIN_PARTITION,
    params:
        landscape=config["landscape"],
        n_shards=PLAN.n_shards,
    script:
        "../scripts/landscape_shard.py"


rule landscape_gather:
    input:
        SHARD_FILES,
    output:
        report(
            f"{RUN_DIR}/landscape/grid.csv",
            caption="../report/landscape.rst",
            category="Tables",
        ),
    log:
        f"{RUN_DIR}/logs/landscape_gather.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("landscape_gather"),
        runtime=runtime("landscape_gather"),
        gpu=0,
    script:
        "../scripts/landscape_gather.py"
