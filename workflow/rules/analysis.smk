# The study's answers (lrdecay/analysis/claims.py): a verdict per Section 2 claim, and trend measures,
# from every seed's tables (with 3 or more seeds, intervals are bootstrapped over seeds); and the
# run-level tables across seeds that the figures draw (figures.smk computes nothing).


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


rule run_tables:
    input:
        timings=every_seed(rules.decay_timing.output[0]),
        metrics=every_seed(rules.gather_training.output.metrics),
        metrics_records=every_seed(rules.gather_training.output.metrics_record),
        sharpness=every_seed(rules.sharpness.output[0]),
        code=code("run_tables.py"),  # the script and the lrdecay modules it imports
    output:
        timing=report(
            f"{RUN_DIR}/decay_timing.csv",
            caption="../report/decay_timing.rst",
            category="Tables",
        ),
        mechanism=report(
            f"{RUN_DIR}/norm_sharpness.csv",
            caption="../report/norm_sharpness.rst",
            category="Tables",
        ),
    log:
        f"{RUN_DIR}/logs/run_tables.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("run_tables"),
    params:
        seeds=SEEDS,  # the seed of each input table, in order
        schedule=SCHEDULE,  # the rows each gathered table must hold
    script:
        "../scripts/run_tables.py"
