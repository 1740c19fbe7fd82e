#!/usr/bin/env bash
# The reference run: the authors' study on real CIFAR-10 through Snakemake, packaged with
# `lrdecay reference` as tables, figures, claims.csv and provenance.json (device, versions, commit,
# config hash, the exact command, wall time per stage), in ONE archive under $OUT
# ($OUT/reference-<NAME>.tar.gz, small: no checkpoints), to unpack into reference/<NAME>/.
#
#   bash benchmarks/reference_run.sh       # the stated one-seed reduction below (<= 5 min, H200)
#   bash benchmarks/reference_run.sh schedule.branch_interval=10   # grow it: all 81 branches
#   bash benchmarks/reference_run.sh schedule.subpath_epochs=1000  # ... or full-length subpaths
#   FULL=1 bash benchmarks/reference_run.sh  # the whole authors' study, three seeds (hours)
# The reduction (REDUCTION below) keeps the authors' model, data, optimiser and the full
# 2,000-epoch main path; one seed; every 200th epoch a branch (200, 400, ..., 1000) for 100
# epochs; Figure 2's grid 21 x 16. Each KEY=VALUE given on the command line is applied after it
# (so one KEY=VALUE grows it), and all are recorded in provenance.json.
# The study's config (preset + data root + reduction) is written to one file first, so Snakemake
# and the packaging read the same thing. The run folder stays in results/ (git-ignored), so on a
# warm machine the same command resumes a run cut by the device's limit (BUDGET_S, default 540 s:
# Snakemake is stopped then, its jobs' resume states kept, and what finished is packaged).
#
# On a device machine (see benchmarks/README.md for the carried folders): carry .whl and .gpu-data.
# On a CPU, the twin that CI runs (tests/test_benchmarks.py), in a minute:
#   PRESET=config/tiny.yaml DATA=none OUT=/tmp/ref PYTHON=.venv/bin/python CORES=2 NAME=tiny \
#       bash benchmarks/reference_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/reference-out}
PY=${PYTHON:-python3}
PRESET=${PRESET:-config/authors.yaml}
DATA=${DATA:-.gpu-data}          # the authors' 5,000 images and the test set; "none": the preset's
CORES=${CORES:-16}
NAME=${NAME:-authors}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source benchmarks/device_env.sh || exit 1
BUDGET_S=${BUDGET_S:-540}
REDUCTION=(seeds=[0] schedule.branch_interval=200 schedule.subpath_epochs=100
           "landscape.points=[21, 16]")
if [ "${FULL:-0}" = 1 ] || [ "$PRESET" != config/authors.yaml ]; then
    REDUCTION=()  # the whole study, or another preset as it is
fi
SETS=("${REDUCTION[@]}" "$@")
if [ "$DATA" != none ]; then
    SETS+=("data.root=$(realpath "$DATA")")
    export LRDECAY_CIFAR_SUBSET=1  # the carried folder is the authors' deliberate subset
fi
CONFIG=$OUT/reference-config.yaml
$PY - "$PRESET" "$CONFIG" "${SETS[@]}" <<'EOF'
import sys, yaml
from lrdecay.tooling import cli
preset, out, *sets = sys.argv[1:]
config = cli.load_config([preset], sets)  # validated: a bad reduction stops here, not hours in
with open(out, "w") as f:
    yaml.safe_dump(config, f, sort_keys=False)
print(f"config: {preset} + {sets or 'no reductions'} -> {out}")
EOF
RUN=($PY -m snakemake --configfile "$CONFIG" --cores "$CORES" --resources gpu=1
     --scheduler greedy --keep-going --rerun-incomplete)
"${RUN[@]}" --unlock > /dev/null 2>&1 || true  # a run killed on the previous call left its lock
echo "== $(date -u '+%F %T UTC') ${RUN[*]} (stopped after ${BUDGET_S} s)"
SECONDS=0
status=0
timeout --signal=TERM --kill-after=30 "$BUDGET_S" "${RUN[@]}" 2>&1 | tee "$OUT/snakemake.log" \
    || status=$?
wall=$SECONDS
echo "== snakemake ended with $status after ${wall} s"
[ "$status" = 124 ] && echo "== cut at BUDGET_S=$BUDGET_S: the same command resumes the run"
COMMAND="bash benchmarks/reference_run.sh $* (PRESET=$PRESET DATA=$DATA FULL=${FULL:-0}): ${RUN[*]}"
rm -rf "$OUT/reference"
$PY -m lrdecay.tooling.cli reference "$CONFIG" --dest "$OUT/reference/$NAME" --command "$COMMAND" \
    --wall-s "$wall" || { [ "$status" = 0 ] && status=1; }
# One archive: a device returns at most 8 files, 2 folders deep.
if [ -d "$OUT/reference/$NAME" ]; then
    tar -czf "$OUT/reference-$NAME.tar.gz" -C "$OUT/reference" "$NAME"
    rm -rf "$OUT/reference"
    echo "== packed $OUT/reference-$NAME.tar.gz ($(du -h "$OUT/reference-$NAME.tar.gz" | cut -f1));"\
         "unpack into reference/: tar -xzf reference-$NAME.tar.gz -C reference"
fi
exit $status
