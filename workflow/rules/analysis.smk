# The study's answers (lrdecay/analysis.py): a verdict per Section 2 claim, and trend measures,
# from every seed's tables (with 3 or more seeds, intervals are bootstrapped over seeds).


rule claims:
    input:
        metrics=every_seed(rules.gather_training.output.metrics),
        metrics_records=every_seed(rules.gather_training.output.metrics_record),
        variance=every_seed(rules.pca.output.variance),
        coordinates=every_seed(rules.pca.output.coordinates),
        sharpness=every_seed(rules.sharpness.output[0]),
        code=code("claims.py"),  # the script and the lrdecay modules it imports
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
        readable=report(
            f"{RUN_DIR}/claims.html",
            caption="../report/claims_readable.rst",
            category="Tables",
        ),
    log:
        f"{RUN_DIR}/logs/claims.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("claims"),
    params:
        seeds=SEEDS,  # the seed of each input table, in order; the first seeds the bootstrap
        reads=CLAIMS_READS,
        schedule=SCHEDULE,  # the rows each gathered table must hold
    script:
        "../scripts/claims.py"
