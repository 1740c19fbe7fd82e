# Data preparation (lrdecay/training/data.py): one compact, verified file per run, shared by every training
# seed (its subsets are seeded by data.seed).


rule prepare_data:
    input:
        code=code("prepare_data.py"),  # the script and the lrdecay modules it imports
    output:
        **label_noise_outputs(),  # the flipped indices, with data.label_noise only
        data=str(PLAN.data_path),
        record=f"{PLAN.data_path}.json",  # size and SHA-256 (lrdecay.core.io)
    log:
        f"{RUN_DIR}/logs/prepare_data.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("prepare_data"),
    params:
        data=DATA_READS,
    script:
        "../scripts/prepare_data.py"
