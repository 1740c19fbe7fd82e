# A sweep's rules across points: the comparison table and figure (lrdecay.analysis.comparison). The
# points' and the shared main paths' rules are the Snakefile's, loaded as modules in
# workflow/rules/sweep_common.smk.


include: "sweep_common.smk"


rule sweep_table:
    input:
        timings=[point_file(p, "decay_timing.csv") for p in SWEEP.points],
        code=sweep_code("sweep_table.py"),
    output:
        report(str(SWEEP.table), caption="../report/sweep.rst", category="Tables"),
    log:
        f"{SWEEP_DIR}/logs/sweep_table.log",
    conda:
        "../envs/lrdecay.yaml"
    threads: 1
    resources:
        **stage_resources("sweep_table"),
    params:
        # each input table's point: its name and swept values, in order
        points=[
            {
                "point": p.name,
                "main_path": p.main,
                **lrdecay.config.sweep.shown_values(p),
            }
            for p in SWEEP.points
        ],
    script:
        "../scripts/sweep_table.py"


rule sweep_figure:
    input:
        table=str(SWEEP.table),
        code=sweep_code("sweep_figure.py"),
    output:
        png=report(
            str(SWEEP.figure("png")),
            caption="../report/sweep_figure.rst",
            category="Figures (sweep)",
        ),
        pdf=str(SWEEP.figure("pdf")),
    log:
        f"{SWEEP_DIR}/logs/sweep_figure.log",
    conda:
        "../envs/lrdecay.yaml"
    threads: 1
    resources:
        **stage_resources("sweep_figure"),
    script:
        "../scripts/sweep_figure.py"
