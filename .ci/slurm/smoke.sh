#!/usr/bin/env bash
# Prove the CI cluster end to end with a trivial workflow: start it, run smoke.smk through
# profiles/slurm-ci, check that every job ran under a SLURM job id, stop the cluster.
#   .ci/slurm/smoke.sh        (about 30 s once SLURM is installed)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SNAKEMAKE="${SNAKEMAKE:-$ROOT/.venv/bin/snakemake}"
t0=$SECONDS

"$HERE/install.sh"
trap '"$HERE/cluster.sh" stop' EXIT
"$HERE/cluster.sh" start

WORK="$(mktemp -d /tmp/lrdecay-slurm-smoke.XXXXXX)"
cp "$HERE/smoke.smk" "$WORK/Snakefile"
cd "$WORK"
timeout -k 30 300 "$SNAKEMAKE" --profile "$ROOT/profiles/slurm-ci" 2>&1 | tee snakemake.log
grep -E "submitted with SLURM jobid|SLURM jobid|jobid" snakemake.log | sed 's/^/  /' || true
for f in a.txt b.txt gpu.txt; do echo "== $f"; cat "$f"; done
# Every job must have run inside SLURM; the GPU job got SLURM's fake GPU (CUDA_VISIBLE_DEVICES=0
# set by slurmd) and device_slot() kept that allocation instead of choosing its own.
grep -q '^job=[0-9]' a.txt && grep -q '^job=[0-9]' b.txt
grep -q '^job=[0-9]* cuda=0$' gpu.txt && [[ "$(head -n1 gpu.txt)" == 0 ]]
echo "smoke: OK in $((SECONDS - t0)) s (work dir $WORK)"
