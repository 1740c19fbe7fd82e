#!/usr/bin/env bash
# Install a SLURM controller, node daemon, client tools and munge from Debian (idempotent).
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    echo "slurm: already installed ($(dpkg-query -W -f '${Version}' slurmctld))"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
echo "slurm: installed ($(dpkg-query -W -f '${Version}' slurmctld))"
