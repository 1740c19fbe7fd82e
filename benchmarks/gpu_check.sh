#!/usr/bin/env bash
# The one prepared device check: the CUDA tests, benchmarks.bench_gpu (K up to 81 with
# evaluation), a torch.profiler profile of a step at K = 1 and 81, and a timed, shortened DAG of
# the authors' preset (one seed) on real data through Snakemake, with the whole study's
# projection. Everything lands in $OUT (at most 8 files, nothing in folders):
#   gpu_check.log (all output), bench_gpu.json, gpu_profile.json, dag_check.json,
#   dag_outputs.tar.gz (every figure, table and job log of the DAG run).
# Each stage writes its JSON as it goes, so a stage cut at its limit still leaves numbers; on a
# warm machine a second call resumes the DAG where it stopped (GPU_CHECK_ONLY=dag reruns just it).
#
# Prepare once, here (see benchmarks/README.md), then on the device machine from the repo root:
#   python ../shared/data/make_gpu_subset.py .gpu-data      # 44 MB of real CIFAR-10
#   pip download ... -d .whl -r benchmarks/gpu_wheels.txt   # snakemake for the device's Python
#   bash benchmarks/gpu_check.sh                            # carry: .whl .gpu-data
# Stage limits on a GPU: 40 + 110 + 30 + 90 = 270 s, so the command ends within 6 minutes with
# at least 90 s to spare for start-up and packing. On a CPU, the twin that CI runs
# (tests/test_benchmarks.py):
#   GPU_CHECK_TINY=1 OUT=/tmp/gpu-check PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
ONLY=${GPU_CHECK_ONLY:-all}
DATA=${GPU_CHECK_DATA:-.gpu-data}
WORK=${GPU_CHECK_WORK:-/tmp/lrdecay-dag-check}  # the DAG run's folder: kept, so a rerun resumes
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source benchmarks/device_env.sh || exit 1
if [ "$TINY" = 1 ]; then  # a CPU runs the tiny sizes slower than an H200 the real ones
    BENCH=(--smoke --device cpu) PROFILE=(--smoke --device cpu) DAG=(--tiny)
    LIMITS=(300 600 300 900)
else
    BENCH=() PROFILE=() DAG=() LIMITS=(40 110 30 90)
fi
stage() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
status=0
{
    echo "== device, $(date -u '+%Y-%m-%d %H:%M UTC')"
    nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
    $PY -c "import torch, snakemake; print('torch', torch.__version__, '| cuda:',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
'| snakemake', snakemake.__version__)"
    if stage tests; then
        echo "== 1/4 CUDA tests (tests/test_devices.py -m cuda; the measured errors are printed)"
        SECONDS=0
        # -o addopts=: the device image has pytest without pytest-xdist (pyproject adds -n auto)
        timeout ${LIMITS[0]} $PY -m pytest -o addopts= -q -rA -s -p no:cacheprovider -m cuda \
            tests/test_devices.py || status=1
        echo "   [${SECONDS}s]"
    fi
    if stage bench; then
        echo "== 2/4 benchmarks.bench_gpu"
        SECONDS=0
        timeout ${LIMITS[1]} $PY -m benchmarks.bench_gpu --out "$OUT" "${BENCH[@]}" || status=1
        echo "   [${SECONDS}s]"
    fi
    if stage profile; then
        echo "== 3/4 benchmarks.gpu_profile (torch.profiler: busy time, kernels per step)"
        SECONDS=0
        timeout ${LIMITS[2]} $PY -m benchmarks.gpu_profile --out "$OUT" "${PROFILE[@]}" \
            || status=1
        echo "   [${SECONDS}s]"
    fi
    if stage dag; then
        echo "== 4/4 shortened authors' DAG (1 seed) through Snakemake, and the projection"
        SECONDS=0
        # dag_check stops Snakemake itself 10 s before the limit and writes what it measured
        timeout ${LIMITS[3]} $PY -m benchmarks.dag_check --data "$DATA" --out "$OUT" \
            --work "$WORK" --bench "$OUT/bench_gpu.json" --budget-s $((LIMITS[3] - 10)) \
            "${DAG[@]}" || status=1
        echo "   [${SECONDS}s]"
    fi
    echo "== done (status $status); files in $OUT:"
    ls -l "$OUT"
    exit $status
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
