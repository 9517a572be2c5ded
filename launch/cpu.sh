#!/usr/bin/env bash
# One machine, CPU only (gloo). Spawns the ranks itself; several silos share a rank when
# there are more silos than processes.   Usage: launch/cpu.sh [CONFIG] [--nproc K] [--set k=v ...]
set -euo pipefail
exec python -m fedsim run "$@"
