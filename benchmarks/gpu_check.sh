#!/usr/bin/env bash
# Issue 8's one prepared device check: the CUDA tests, benchmarks.bench_gpu and a timed,
# shortened DAG of the authors' preset on real data through Snakemake, with the whole study's
# projection printed next to the measured run. Everything lands in $OUT (at most 8 files):
#   gpu_check.log (all output), bench_gpu.json, dag_check.json,
#   dag_outputs.tar.gz (every figure, table and job log of the DAG run).
#
# Prepare once, here (see benchmarks/README.md), then on the device machine from the repo root:
#   python ../shared/data/make_gpu_subset.py .gpu-data      # 44 MB of real CIFAR-10
#   pip download ... -d .whl -r benchmarks/gpu_wheels.txt   # snakemake for the device's Python
#   bash benchmarks/gpu_check.sh                            # carry: .whl .gpu-data
# Sized for < 8 min on an H100 (stage limits 120 + 200 + 270 s). On a CPU, to check the script:
#   GPU_CHECK_TINY=1 OUT=/tmp/gpu-check PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source benchmarks/device_env.sh || exit 1
if [ "$TINY" = 1 ]; then  # a CPU runs the tiny sizes slower than an H100 the real ones
    BENCH=(--smoke --device cpu) DAG=(--tiny) LIMITS=(600 900 900)
else
    BENCH=() DAG=() LIMITS=(120 200 270)
fi
status=0
{
    echo "== device, $(date -u '+%Y-%m-%d %H:%M UTC')"
    nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
    $PY -c "import torch, snakemake; print('torch', torch.__version__, '| cuda:',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
'| snakemake', snakemake.__version__)"
    echo "== 1/3 CUDA tests (tests/test_devices.py -m cuda; the measured errors are printed)"
    SECONDS=0
    timeout ${LIMITS[0]} $PY -m pytest -q -rA -s -p no:cacheprovider -m cuda tests/test_devices.py \
        || status=1
    echo "   [${SECONDS}s]"
    echo "== 2/3 benchmarks.bench_gpu"
    SECONDS=0
    timeout ${LIMITS[1]} $PY -m benchmarks.bench_gpu --out "$OUT" "${BENCH[@]}" || status=1
    echo "   [${SECONDS}s]"
    echo "== 3/3 shortened authors' DAG through Snakemake, and the projection"
    SECONDS=0
    timeout ${LIMITS[2]} $PY -m benchmarks.dag_check --data .gpu-data --out "$OUT" \
        --bench "$OUT/bench_gpu.json" "${DAG[@]}" || status=1
    echo "   [${SECONDS}s]"
    echo "== done (status $status); files in $OUT:"
    ls -l "$OUT"
    exit $status
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
