# Section 3 toy model (lrdecay.toy): SGD/SDE/ODE simulations, the checks table, Figures 3 and 4.
# Thin rules; the maths and the criteria live in lrdecay/toy. Runs on CPU in about a minute.
# The toy section's rules (n < d, gamma > -1, a stable step size) are checked once, with the
# rest of the config, by lrdecay.config.validate.validate in common.smk.

TOY_DIR = f"{RUN_DIR}/toy"
# keys sorted, as in every rule's params (lrdecay.study.plan.canonical)
TOY_PARAMS = lrdecay.study.plan.canonical(config["toy"])
TOY_GAMMAS = [f"{g:g}" for g in config["toy"]["gammas"]]
TOY_CATEGORY = "Toy model (Section 3)"
TOY_FIGURE_PNGS = ["fig4_png", "norm_png", "phases_png", "decay_png"]  # of toy_figures


wildcard_constraints:
    gamma=r"-?[0-9.]+(e-?[0-9]+)?",


rule toy_checks:
    input:
        code=code("toy_checks.py"),  # the script and the lrdecay modules it imports
    output:
        instance=f"{TOY_DIR}/gamma-{{gamma}}/instance.npz",
        instance_record=f"{TOY_DIR}/gamma-{{gamma}}/instance.npz.json",
        table=f"{TOY_DIR}/gamma-{{gamma}}/checks.csv",
        traces=f"{TOY_DIR}/gamma-{{gamma}}/traces.npz",
    log:
        f"{RUN_DIR}/logs/toy_checks-{{gamma}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("toy_checks"),
    params:
        toy=TOY_PARAMS,
    script:
        "../scripts/toy_checks.py"


rule toy_table:
    input:
        checks=expand(rules.toy_checks.output.table, gamma=TOY_GAMMAS),
        code=code("toy_table.py"),  # the script and the lrdecay modules it imports
    output:
        report(
            f"{TOY_DIR}/checks.csv",
            caption="../report/toy-checks.rst",
            category=TOY_CATEGORY,
        ),
    log:
        f"{RUN_DIR}/logs/toy_table.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("toy_table"),
    script:
        "../scripts/toy_table.py"


rule toy_figure3:
    input:
        code=code("toy_figure3.py"),  # the script and the lrdecay modules it imports
    output:
        png=report(
            f"{TOY_DIR}/figure3.png",
            caption="../report/toy-figure3.rst",
            category=TOY_CATEGORY,
        ),
        pdf=f"{TOY_DIR}/figure3.pdf",
    log:
        f"{RUN_DIR}/logs/toy_figure3.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("toy_figure3"),
    params:
        toy=TOY_PARAMS,
    script:
        "../scripts/toy_figure3.py"


rule toy_figures:
    input:
        traces=expand(rules.toy_checks.output.traces, gamma=TOY_GAMMAS),
        code=code("toy_figures.py"),  # the script and the lrdecay modules it imports
    output:
        fig4_png=report(
            f"{TOY_DIR}/figure4.png",
            caption="../report/toy-figure4.rst",
            category=TOY_CATEGORY,
        ),
        fig4_pdf=f"{TOY_DIR}/figure4.pdf",
        norm_png=report(
            f"{TOY_DIR}/norm_vs_ode.png",
            caption="../report/toy-norm_vs_ode.rst",
            category=TOY_CATEGORY,
        ),
        norm_pdf=f"{TOY_DIR}/norm_vs_ode.pdf",
        phases_png=report(
            f"{TOY_DIR}/phases.png",
            caption="../report/toy-phases.rst",
            category=TOY_CATEGORY,
        ),
        phases_pdf=f"{TOY_DIR}/phases.pdf",
        decay_png=report(
            f"{TOY_DIR}/late_decay.png",
            caption="../report/toy-late_decay.rst",
            category=TOY_CATEGORY,
        ),
        decay_pdf=f"{TOY_DIR}/late_decay.pdf",
    log:
        f"{RUN_DIR}/logs/toy_figures.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **stage_resources("toy_figures"),
    params:
        toy=TOY_PARAMS,
    script:
        "../scripts/toy_figures.py"


TOY_TARGETS = [
    rules.toy_table.output[0],
    rules.toy_figure3.output.png,
    *[rules.toy_figures.output[name] for name in TOY_FIGURE_PNGS],
]
