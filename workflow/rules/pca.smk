# Trajectory PCA (lrdecay/analysis/pca.py) over every snapshot of one seed's main path and subpaths.


rule pca:
    input:
        main=upstream(rules.gather_training.output.main),
        groups=group_dirs,
        code=code("pca.py"),  # the script and the lrdecay modules it imports
    output:
        variance=report(
            f"{SEED_DIR}/pca/explained_variance.csv",
            caption="../report/pca.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
        coordinates=report(
            f"{SEED_DIR}/pca/coordinates.csv",
            caption="../report/pca_coordinates.rst",
            category="Tables",
            subcategory="Seed {seed}",
        ),
        basis=f"{SEED_DIR}/pca/basis.npy",
        basis_record=f"{SEED_DIR}/pca/basis.npy.json",  # layout, size and SHA-256
    log:
        f"{SEED_DIR}/logs/pca.log",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        **stage_resources("pca"),
    params:
        seed=seed_of,  # with reads: the training hash the outputs record
        reads=PCA_READS,
    script:
        "../scripts/pca.py"
