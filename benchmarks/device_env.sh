# Sourced from the repository root by the device scripts (gpu_check.sh, reference_run.sh), with
# $PY set: installs the carried Snakemake wheels (.whl, benchmarks/README.md) where the image has
# no Snakemake, and puts this checkout's lrdecay first on PYTHONPATH.
if [ -d .whl ] && ! $PY -c "import snakemake" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lrdecay-site .whl/*.whl || return 1
    export PYTHONPATH=/tmp/lrdecay-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
