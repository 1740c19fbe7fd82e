# Figures 1 and 2 (lrdecay/analysis/figures.py), drawn from the result tables: 1a-c and 2 show the first
# seed, 1d and the norm/sharpness figure every seed (mean and 95 % interval, from the run-level
# tables of rule run_tables); and the run's headline numbers as DVC metrics (lrdecay/analysis/summary.py).


rule figure1:
    input:
        metrics=first_seed(rules.gather_training.output.metrics),
        metrics_record=first_seed(rules.gather_training.output.metrics_record),
        timing=upstream(rules.run_tables.output.timing),  # across seeds (rule run_tables)
        code=code("figure1.py"),  # the script and the lrdecay modules it imports
    output:
        fig1a=figure("fig1a_learning_curves", "fig1a"),
        fig1b=figure("fig1b_subpath_train_loss", "fig1b"),
        fig1c=figure("fig1c_subpath_test_loss", "fig1c"),
        fig1d=figure("fig1d_decay_timing", "fig1d"),
    log:
        f"{RUN_DIR}/logs/figure1.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("figure1"),
    params:
        schedule=SCHEDULE,  # the rows the gathered table must hold
    script:
        "../scripts/figure1.py"


rule figure2:
    input:
        grid=first_seed(rules.landscape_gather.output[0]),
        coordinates=first_seed(rules.pca.output.coordinates),
        variance=first_seed(rules.pca.output.variance),
        # snapshots' distance from the surface (needs PC3; lrdecay.analysis.landscape.surface_table)
        surface=(
            first_seed(rules.landscape_surface.output[0])
            if config["pca"]["n_components"] >= 3
            else []
        ),
        code=code("figure2.py"),  # the script and the lrdecay modules it imports
    output:
        fig2a=figure("fig2a_landscape_train", "fig2a"),
        fig2b=figure("fig2b_landscape_test", "fig2b"),
    log:
        f"{RUN_DIR}/logs/figure2.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("figure2"),
    script:
        "../scripts/figure2.py"


rule figure_mechanism:
    input:
        bands=upstream(rules.run_tables.output.mechanism),  # across seeds (rule run_tables)
        code=code("figure_mechanism.py"),  # the script and the lrdecay modules it imports
    output:
        figure=figure("fig_norm_sharpness", "fig_norm_sharpness"),
    log:
        f"{RUN_DIR}/logs/figure_mechanism.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("figure_mechanism"),
    script:
        "../scripts/figure_mechanism.py"


rule summary:
    input:
        timing=upstream(rules.run_tables.output.timing),
        variance=every_seed(rules.pca.output.variance),
        toy=upstream(rules.toy_table.output[0]),
        claims=upstream(rules.claims.output.claims),
        code=code("summary.py"),  # the script and the lrdecay modules it imports
    output:
        summary=f"{RUN_DIR}/summary.json",
        headline=f"{RUN_DIR}/headline.json",
    log:
        f"{RUN_DIR}/logs/summary.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("summary"),
    script:
        "../scripts/summary.py"
