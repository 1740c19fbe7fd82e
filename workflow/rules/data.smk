# Data preparation (lrdecay/data.py): one compact, verified file per run.


rule prepare_data:
    output:
        data=str(PLAN.data_path),
        record=f"{PLAN.data_path}.json",  # size and SHA-256 (lrdecay.io)
    params:
        data=config["data"],
        seed=config["seed"],
    log:
        f"{RUN_DIR}/logs/prepare_data.log",
    threads: 1
    resources:
        mem_mb=mem_mb("prepare_data"),
        runtime=runtime("prepare_data"),
        gpu=0,
    conda:
        CONDA_ENV
    script:
        "../scripts/prepare_data.py"
