#!/usr/bin/env bash
# Issue 9's reference run: the authors' study on real CIFAR-10 through Snakemake, packaged with
# `lrdecay reference` as tables, figures, claims.csv and provenance.json (device, versions, commit,
# config hash, the exact command, wall time per stage) for reference/authors/.
#
#   bash benchmarks/reference_run.sh                       # the whole study (hours on one H100)
#   bash benchmarks/reference_run.sh schedule.subpath_epochs=100 schedule.branch_interval=200
#                                                          # a stated reduction: KEY=VALUE each
# The study's config (preset + data root + reductions) is written to one file first, so Snakemake
# and the packaging read the same thing, and provenance.json records it whole. Then copy
# $OUT/reference/authors to reference/authors/ and commit it (small: no checkpoints).
#
# On a device machine (see benchmarks/README.md for the carried folders): carry .whl and .gpu-data.
# On a CPU, to check the script in minutes:
#   PRESET=config/tiny.yaml DATA=none OUT=/tmp/ref PYTHON=.venv/bin/python CORES=2 \
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
SETS=("$@")
if [ "$DATA" != none ]; then
    SETS+=("data.root=$(realpath "$DATA")")
    export LRDECAY_CIFAR_SUBSET=1  # the carried folder is the authors' deliberate subset
fi
CONFIG=$OUT/reference-config.yaml
$PY - "$PRESET" "$CONFIG" "${SETS[@]}" <<'EOF'
import sys, yaml
from lrdecay import cli
preset, out, *sets = sys.argv[1:]
config = cli.load_config([preset], sets)  # validated: a bad reduction stops here, not hours in
with open(out, "w") as f:
    yaml.safe_dump(config, f, sort_keys=False)
print(f"config: {preset} + {sets or 'no reductions'} -> {out}")
EOF
RUN=($PY -m snakemake --configfile "$CONFIG" --cores "$CORES" --resources gpu=1
     --scheduler greedy --keep-going)
echo "== $(date -u '+%F %T UTC') ${RUN[*]}"
SECONDS=0
status=0
"${RUN[@]}" 2>&1 | tee "$OUT/snakemake.log" || status=$?
wall=$SECONDS
echo "== snakemake ended with $status after ${wall} s"
COMMAND="bash benchmarks/reference_run.sh $* (PRESET=$PRESET DATA=$DATA): ${RUN[*]}"
$PY -m lrdecay.cli reference "$CONFIG" --dest "$OUT/reference/$NAME" --command "$COMMAND" \
    --wall-s "$wall"
exit $status
