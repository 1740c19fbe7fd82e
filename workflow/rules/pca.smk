# Trajectory PCA (lrdecay/pca.py) over every snapshot of the main path and the subpaths.


rule pca:
    input:
        main=f"{RUN_DIR}/trajectories/main.npy",
        groups=GROUP_DIRS,
    output:
        variance=report(
            f"{RUN_DIR}/pca/explained_variance.csv",
            caption="../report/pca.rst",
            category="Tables",
        ),
        coordinates=report(
            f"{RUN_DIR}/pca/coordinates.csv",
            caption="../report/pca_coordinates.rst",
            category="Tables",
        ),
        basis=f"{RUN_DIR}/pca/basis.npy",
        basis_record=f"{RUN_DIR}/pca/basis.npy.json",  # layout, size and SHA-256
    log:
        f"{RUN_DIR}/logs/pca.log",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=mem_mb("pca"),
        runtime=runtime("pca"),
        gpu=0,
    params:
        pca=config["pca"],
    script:
        "../scripts/pca.py"
