# The study's answers (lrdecay/analysis.py): a verdict per Section 2 claim, and trend measures.


rule claims:
    input:
        metrics=rules.gather_training.output.metrics,
        variance=rules.pca.output.variance,
        coordinates=rules.pca.output.coordinates,
    output:
        claims=report(
            f"{RUN_DIR}/claims.csv",
            caption="../report/claims.rst",
            category="Tables",
        ),
        trends=report(
            f"{RUN_DIR}/trends.csv",
            caption="../report/trends.rst",
            category="Tables",
        ),
    log:
        f"{RUN_DIR}/logs/claims.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("claims"),
        runtime=runtime("claims"),
        gpu=0,
    params:
        seed=config["seed"],
    script:
        "../scripts/claims.py"
