# Training (lrdecay/training/train.py), once per seed: the main path as a chain of segment jobs, subpaths
# in groups of K. Partial state lives in <run>/seed-<s>/.resume/ (not an output), so a killed job
# resumes where it stopped.


rule main_segment:
    input:
        **label_noise_inputs(),
        data=upstream(rules.prepare_data.output.data),
        # with label noise: requested, so a new label_noise reruns prepare_data (Snakemake skips
        # its params check while an output has no record, and runs a job only for requested ones)
        previous=segment_input,
        code=code("main_segment.py"),  # the script and the lrdecay modules it imports
    output:
        directory(str(PLAN.segment_dir("{end}", seed="{seed}"))),
    log:
        f"{SEED_DIR}/logs/{lrdecay.study.layout.SEGMENT_JOB.pattern}.log",
    # capped runtime (LRDECAY_MAX_RUNTIME): resubmitted until done, resuming from .resume/
    retries: COSTS.retries("main_segment", workflow.execution_settings)
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        **stage_resources("main_segment"),
    params:
        seed=seed_of,
        reads=MAIN_PATH_READS,
    script:
        "../scripts/main_segment.py"


rule subpath_group:
    input:
        data=upstream(rules.prepare_data.output.data),
        segments=group_inputs,
        code=code("subpath_group.py"),  # the script and the lrdecay modules it imports
    output:
        directory(str(PLAN.group_dir("{group}", seed="{seed}"))),
    log:
        f"{SEED_DIR}/logs/{lrdecay.study.layout.GROUP_JOB.pattern}.log",
    # capped runtime (LRDECAY_MAX_RUNTIME): resubmitted until done, resuming from .resume/
    retries: COSTS.retries("subpath_group", workflow.execution_settings)
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        **stage_resources("subpath_group"),
    params:
        seed=seed_of,
        reads=SUBPATH_READS,
    script:
        "../scripts/subpath_group.py"


rule gather_training:
    input:
        segments=segment_dirs,
        groups=group_dirs,
        code=code("gather_training.py"),  # the script and the lrdecay modules it imports
    output:
        metrics=report(
            f"{SEED_DIR}/{lrdecay.study.layout.METRICS}",
            caption="../report/metrics.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
        main=f"{SEED_DIR}/trajectories/main.npy",
        main_record=f"{SEED_DIR}/trajectories/main.npy.json",  # layout, size and SHA-256
        metrics_record=f"{SEED_DIR}/{lrdecay.study.layout.METRICS}.json",  # size and SHA-256
    log:
        f"{SEED_DIR}/logs/gather_training.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("gather_training"),
    params:
        # every planned path and epoch must be there
        schedule=SCHEDULE,
    script:
        "../scripts/gather_training.py"


rule decay_timing:
    input:
        metrics=upstream(rules.gather_training.output.metrics),
        metrics_record=upstream(rules.gather_training.output.metrics_record),
        code=code("decay_timing.py"),  # the script and the lrdecay modules it imports
    output:
        report(
            f"{SEED_DIR}/decay_timing.csv",
            caption="../report/decay_timing_seed.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
    log:
        f"{SEED_DIR}/logs/decay_timing.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("decay_timing"),
    params:
        schedule=SCHEDULE,  # the rows the gathered table must hold
    script:
        "../scripts/decay_timing.py"
