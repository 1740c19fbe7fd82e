# Figures 1 and 2 (lrdecay/figures.py), computed from the result tables, and the run's
# headline numbers as DVC metrics (lrdecay/summary.py).


rule figure1:
    input:
        metrics=f"{RUN_DIR}/metrics.csv",
    output:
        fig1a=figure("fig1a_learning_curves", "fig1a"),
        fig1b=figure("fig1b_subpath_train_loss", "fig1b"),
        fig1c=figure("fig1c_subpath_test_loss", "fig1c"),
        fig1d=figure("fig1d_decay_timing", "fig1d"),
        table=report(
            f"{RUN_DIR}/decay_timing.csv",
            caption="../report/decay_timing.rst",
            category="Tables",
        ),
    log:
        f"{RUN_DIR}/logs/figure1.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("figure1"),
        runtime=runtime("figure1"),
        gpu=0,
    script:
        "../scripts/figure1.py"


rule figure2:
    input:
        grid=f"{RUN_DIR}/landscape/grid.csv",
        coordinates=f"{RUN_DIR}/pca/coordinates.csv",
        variance=f"{RUN_DIR}/pca/explained_variance.csv",
    output:
        fig2a=figure("fig2a_landscape_train", "fig2a"),
        fig2b=figure("fig2b_landscape_test", "fig2b"),
    log:
        f"{RUN_DIR}/logs/figure2.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("figure2"),
        runtime=runtime("figure2"),
        gpu=0,
    script:
        "../scripts/figure2.py"


rule summary:
    input:
        timing=f"{RUN_DIR}/decay_timing.csv",
        variance=f"{RUN_DIR}/pca/explained_variance.csv",
        toy=f"{RUN_DIR}/toy/checks.csv",
        claims=f"{RUN_DIR}/claims.csv",
    output:
        f"{RUN_DIR}/summary.json",
    log:
        f"{RUN_DIR}/logs/summary.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime("summary"),
        gpu=0,
    script:
        "../scripts/summary.py"
