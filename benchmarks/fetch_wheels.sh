#!/usr/bin/env bash
# Fetch, here, the wheels that the device check carries (.whl/): Snakemake and what the device
# image lacks, for its Python 3.12 (benchmarks/gpu_wheels.txt). PyPI has no wheel of
# connection-pool (source only), so it is built with `pip wheel`; every other line is downloaded
# as a manylinux/pure wheel. Run from the repository root:  bash benchmarks/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${DEST:-.whl}
mkdir -p "$DEST"
SOURCE_ONLY=(connection-pool)
pattern=$(IFS='|'; echo "^(${SOURCE_ONLY[*]})==")
binary=$(mktemp)
grep -Ev "$pattern" benchmarks/gpu_wheels.txt > "$binary"
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" -r "$binary"
grep -E "$pattern" benchmarks/gpu_wheels.txt | xargs $PY -m pip wheel -q --no-deps -w "$DEST"
rm -f "$binary"
echo "$(ls "$DEST"/*.whl | wc -l) wheels in $DEST ($(du -sh "$DEST" | cut -f1))"
