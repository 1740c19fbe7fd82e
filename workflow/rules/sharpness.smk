# Sharpness (lrdecay/analysis/sharpness.py), once per seed: the top Hessian eigenvalue of the training
# loss at every branch point on the main path and at every subpath's end.


rule sharpness:
    input:
        data=upstream(rules.prepare_data.output.data),
        segments=segment_dirs,  # the main path's states at the branch points
        groups=group_dirs,  # each subpath's final weights
        code=code("sharpness.py"),  # the script and the lrdecay modules it imports
    output:
        report(
            f"{SEED_DIR}/sharpness.csv",
            caption="../report/sharpness.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
    log:
        f"{SEED_DIR}/logs/sharpness.log",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        **stage_resources("sharpness"),
    params:
        seed=seed_of,
        reads=SHARPNESS_READS,
    script:
        "../scripts/sharpness.py"
