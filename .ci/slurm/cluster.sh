#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, run as root without systemd.
#
#   .ci/slurm/cluster.sh start    wipe the state folder, write slurm.conf/gres.conf, start munged,
#                                 slurmctld and slurmd, wait until the node is idle
#   .ci/slurm/cluster.sh stop     stop every daemon that `start` started, by recorded PID
#   .ci/slurm/cluster.sh status   sinfo/squeue
#
# State, logs and the generated config live in $LRDECAY_SLURM_STATE (default /tmp/lrdecay-slurm).
# /etc/slurm/slurm.conf and gres.conf become symlinks to that config while the cluster runs
# (a file already there is set aside and put back by `stop`): the Snakemake jobstep plugin
# strips SLURM_* variables, SLURM_CONF included, before its inner srun, so SLURM_CONF alone
# would not reach srun inside a job.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${LRDECAY_SLURM_STATE:-/tmp/lrdecay-slurm}"
CTLD_PORT="${LRDECAY_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${LRDECAY_SLURMD_PORT:-6818}"
PARTITION="${LRDECAY_SLURM_CI_PARTITION:-ci}"
PIDS="$STATE/pids"
ETC=/etc/slurm
CONF="$STATE/etc/slurm.conf"
unset SLURM_CONF  # use the default path, /etc/slurm/slurm.conf, like srun inside jobs does

log() { echo "[slurm $(date +%T)] $*" >&2; }

# Stop the daemons listed in $PIDS (one "name pid" per line), newest first; only a PID whose
# process still has the recorded name is signalled, so a recycled PID is never hit.
stop() {
    [[ -f "$PIDS" ]] || { log "nothing to stop"; return 0; }
    local name pid
    # Jobs first: their slurmstepd processes would outlive slurmd. Every job on this throw-away
    # cluster is ours.
    if scontrol ping >/dev/null 2>&1; then
        local jobs
        jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)"
        if [[ -n "${jobs// /}" ]]; then
            log "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs || true
            for _ in $(seq 30); do [[ -z "$(squeue -h 2>/dev/null)" ]] && break; sleep 1; done
        fi
    fi
    tac "$PIDS" | while read -r name pid; do
        if [[ -d /proc/$pid ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
            if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
            log "stopped $name (pid $pid)"
        fi
    done
    rm -f "$PIDS"
    unlink_conf
}

# Point /etc/slurm/{slurm,gres}.conf at our config; set aside whatever was there.
link_conf() {
    mkdir -p "$ETC"
    local f
    for f in slurm.conf gres.conf; do
        if [[ -e "$ETC/$f" || -L "$ETC/$f" ]] && [[ "$(readlink "$ETC/$f")" != "$STATE/etc/$f" ]]
        then
            mv "$ETC/$f" "$ETC/$f.lrdecay-saved"
        fi
        ln -sfn "$STATE/etc/$f" "$ETC/$f"
    done
}

unlink_conf() {
    local f
    for f in slurm.conf gres.conf; do
        if [[ -L "$ETC/$f" && "$(readlink "$ETC/$f")" == "$STATE/etc/$f" ]]; then
            rm -f "$ETC/$f"
            if [[ -e "$ETC/$f.lrdecay-saved" ]]; then mv "$ETC/$f.lrdecay-saved" "$ETC/$f"; fi
        fi
    done
}

# Run a daemon in the foreground of a background job and record its PID.
spawn() {
    local name="$1"; shift
    "$@" >"$STATE/$name.out" 2>&1 &
    echo "$name $!" >>"$PIDS"
}

render() {  # template -> file, filling the @VAR@ placeholders
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@NODE_LINE@|$NODE_LINE|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@PARTITION@|$PARTITION|g" "$1" >"$2"
}

dump_logs() {
    for f in "$STATE"/*.log "$STATE"/*.out; do
        [[ -f "$f" ]] && { echo "----- $f (tail)"; tail -n 25 "$f"; }
    done >&2
}

start() {
    local t0=$SECONDS
    stop
    # Stale state (old job ids, a node remembered as down) would make runs differ: start clean.
    rm -rf "$STATE"
    mkdir -p "$STATE/etc" "$STATE/ctld" "$STATE/slurmd"
    HOST="$(hostname -s)"
    # slurmd -C reports this machine as SLURM sees it: CPUs, sockets/cores/threads, RealMemory.
    NODE_LINE="$(slurmd -C | head -n1 | sed 's/^NodeName=//')"
    render "$HERE/slurm.conf.in" "$CONF"
    render "$HERE/gres.conf.in" "$STATE/etc/gres.conf"
    link_conf
    log "node: $NODE_LINE"

    # munge authenticates every SLURM message; reuse a running munged (e.g. the system's).
    if ! (munge -n | unmunge) >/dev/null 2>&1; then
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
        spawn munged setpriv --reuid=munge --regid=munge --clear-groups \
            /usr/sbin/munged --foreground
        for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.2; done
        (munge -n | unmunge) >/dev/null 2>&1 || { log "munged did not start"; dump_logs; exit 1; }
    fi
    spawn slurmctld /usr/sbin/slurmctld -D
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.3; done
    spawn slurmd /usr/sbin/slurmd -D

    local state=""
    for _ in $(seq 120); do
        state="$(sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)"
        [[ "$state" == idle ]] && break
        case "$state" in inval*|drain*|down*|fail*) [[ $((SECONDS - t0)) -gt 20 ]] && break ;; esac
        sleep 1
    done
    if [[ "$state" != idle ]]; then
        log "node is '$state', not idle"; sinfo -N -l >&2 || true
        scontrol show node >&2 || true; dump_logs; stop; exit 1
    fi
    sinfo
    log "cluster up in $((SECONDS - t0)) s (config $CONF)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N -l; squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
