#!/usr/bin/env bash
# The quick preset's whole DAG through a real (single-node, localhost) SLURM cluster, compared
# with a local run of the same DAG. Returns non-zero on any failure; stops every daemon it
# started, whatever happens.
#
#   .ci/slurm/run-quick.sh
#
# Environment:
#   LRDECAY_SLURM_REFERENCE  run folder of a local run of the same checkout and config (e.g.
#                            results/quick after `snakemake --profile profiles/local`): compare
#                            with it instead of making a fresh local run (saves that run's time)
#   LRDECAY_SLURM_LIMIT      seconds allowed for the SLURM run (default 2400; it took 820 s
#                            for the 24-job quick DAG on 2 busy cores)
#   LRDECAY_SLURM_KEEP=1     keep the work folder (it is kept anyway on failure)
#   SNAKEMAKE, PYTHON        default: the checkout's .venv
# Must run as root (it starts munged/slurmctld/slurmd and links /etc/slurm/slurm.conf).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SNAKEMAKE="${SNAKEMAKE:-$ROOT/.venv/bin/snakemake}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LIMIT="${LRDECAY_SLURM_LIMIT:-2400}"
t0=$SECONDS
say() { echo "[run-quick $(date +%T) +$((SECONDS - t0))s] $*"; }

WORK="$(mktemp -d /tmp/lrdecay-slurm-quick.XXXXXX)"
cleanup() {
    local rc=$?
    "$HERE/cluster.sh" stop || true
    if [[ $rc -eq 0 && "${LRDECAY_SLURM_KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; fi
    [[ $rc -eq 0 ]] || say "FAILED (rc $rc); work folder kept: $WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A snapshot of the checkout (without venv, git, results), so both runs see the same sources
# and neither touches the checkout's results/ or .snakemake/.
say "copying the workflow to $WORK/src"
mkdir -p "$WORK/src"
tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude=./results --exclude=./.snakemake \
    --exclude=./data --exclude='__pycache__' --exclude=./.ci -cf - . | tar -C "$WORK/src" -xf -
# Jobs import lrdecay from the snapshot, not from the checkout the venv points to.
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK/src"

run_name="$("$PYTHON" -c 'import yaml; print(yaml.safe_load(open("config.yaml"))["run_name"])')"
if [[ -n "${LRDECAY_SLURM_REFERENCE:-}" ]]; then
    reference="$(cd "$ROOT" && realpath "$LRDECAY_SLURM_REFERENCE")"
    [[ -d "$reference" ]] || { say "no reference run folder $reference"; exit 1; }
    say "reference: existing local run $reference"
else
    reference="$WORK/local/$run_name"
    say "reference: local run (profiles/local)"
    "$SNAKEMAKE" --profile profiles/local --cores 2 --nocolor \
        --config output_dir="$WORK/local" >"$WORK/local.log" 2>&1 \
        || { tail -n 60 "$WORK/local.log"; say "local run failed"; exit 1; }
    say "local run done"
fi

"$HERE/install.sh"
"$HERE/cluster.sh" start

# The training and landscape rules are tagged gpu=1 (as with `device: cuda`) while they still
# compute on the CPU, so the outputs must equal the local run's and SLURM schedules them as GPU
# jobs (--gpus=1) on the node's fake GPU. Every ready GPU job must be queued at once: squeue is
# polled during the run and at least two GPU jobs must be pending or running at the same moment
# (a workflow profile with `resources: gpu: 1` would submit them one after another).
GPU_RULES=(main_segment subpath_group landscape_shard)
say "SLURM run (profiles/slurm-ci, rules ${GPU_RULES[*]} tagged gpu=1), limit ${LIMIT}s"
(
    while :; do
        # time, job id, state, GPUs asked for (sbatch --gpus: "gres:gpu:1"), rule (comment)
        squeue -h -O "JobID:10,State:10,tres-per-job:16,Comment:70" 2>/dev/null \
            | sed "s/^/$(date +%T) /" || true
        sleep 1
    done
) >"$WORK/squeue.log" &
poller=$!
set +e
timeout -k 30 "$LIMIT" "$SNAKEMAKE" --profile profiles/slurm-ci --nocolor \
    --set-resources "${GPU_RULES[@]/%/:gpu=1}" \
    --config output_dir="$WORK/slurm" >"$WORK/slurm.log" 2>&1
rc=$?
set -e
kill "$poller" 2>/dev/null || true
grep -E "submitted with SLURM jobid|Error|error|Falling back" "$WORK/slurm.log" || true
if [[ $rc -ne 0 ]]; then
    tail -n 80 "$WORK/slurm.log"
    [[ $rc -eq 124 || $rc -eq 137 ]] && say "SLURM run timed out after ${LIMIT}s"
    say "SLURM run failed (rc $rc)"; exit 1
fi
n_jobs="$(grep -c 'submitted with SLURM jobid' "$WORK/slurm.log" || true)"
n_planned="$(grep -oE '^total +[0-9]+' "$WORK/slurm.log" | head -n1 | awk '{print $2}')"
n_local="$(grep -c '^localrule ' "$WORK/slurm.log" || true)"
say "SLURM run done: $n_jobs sbatch jobs + $n_local local (rule all) = DAG of $n_planned jobs"
# Every job except the local target rule(s) went through sbatch.
if [[ "$n_jobs" -lt 1 || $((n_jobs + n_local)) -ne "${n_planned:-0}" ]]; then
    say "expected every one of the $n_planned jobs to be submitted or local"; exit 1
fi

# GPU jobs (those that asked SLURM for a GPU) in the queue at the same moment.
gpu_lines() { grep -E ' gres:gpu:[0-9]' "$WORK/squeue.log" || true; }
peak="$(gpu_lines | awk '{print $1}' | sort | uniq -c | sort -rn | awk 'NR == 1 {print $1, $2}')"
if [[ -z "$peak" || "${peak%% *}" -lt 2 ]]; then
    say "at most ${peak%% *} GPU job(s) queued at once: were they submitted one at a time?"
    exit 1
fi
say "${peak%% *} GPU jobs pending or running at ${peak#* } (squeue):"
gpu_lines | grep "^${peak#* } " | sed 's/^/  /'
grep -q "workflow specific profile" "$WORK/slurm.log" \
    && { say "a workflow profile was loaded on top of profiles/slurm-ci"; exit 1; }

say "comparing tables and arrays: local vs SLURM"
"$PYTHON" "$HERE/compare_outputs.py" "$reference" "$WORK/slurm/$run_name"
say "OK: quick DAG through SLURM matches the local run (total $((SECONDS - t0)) s)"
