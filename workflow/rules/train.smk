# Training (lrdecay/train.py): the main path as a chain of segment jobs, subpaths in groups of K.
# Partial state lives in <run>/.resume/ (not an output), so a killed job resumes where it stopped.


rule main_segment:
    input:
        data=str(PLAN.data_path),
        previous=segment_input,
    output:
        directory(f"{RUN_DIR}/main/segment-{{end}}"),
    log:
        f"{RUN_DIR}/logs/main_segment-{{end}}.log",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=mem_mb("main_segment"),
        runtime=runtime("main_segment"),
        gpu=GPU,
        slurm_partition=TRAIN_PARTITION,
    params:
        training=TRAINING_PARAMS,
    script:
        "../scripts/main_segment.py"


rule subpath_group:
    input:
        data=str(PLAN.data_path),
        segments=group_inputs,
    output:
        directory(f"{RUN_DIR}/subpaths/group-{{group}}"),
    log:
        f"{RUN_DIR}/logs/subpath_group-{{group}}.log",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=mem_mb("subpath_group"),
        runtime=runtime("subpath_group"),
        gpu=GPU,
        slurm_partition=TRAIN_PARTITION,
    params:
        training=TRAINING_PARAMS,
    script:
        "../scripts/subpath_group.py"


rule gather_training:
    input:
        segments=SEGMENT_DIRS,
        groups=GROUP_DIRS,
    output:
        metrics=report(
            f"{RUN_DIR}/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
        ),
        main=f"{RUN_DIR}/trajectories/main.npy",
        main_record=f"{RUN_DIR}/trajectories/main.npy.json",  # layout, size and SHA-256
    log:
        f"{RUN_DIR}/logs/gather_training.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("gather_training"),
        runtime=runtime("gather_training"),
        gpu=0,
    script:
        "../scripts/gather_training.py"
