#!/usr/bin/env bash
# Several nodes with c10d rendezvous. Run the same command on every node:
#   NNODES=2 GPUS=8 RDZV_HOST=node0.example RDZV_PORT=29500 launch/multi_node.sh CONFIG
# Silos are placed on global ranks in contiguous blocks (silo i on rank i when counts match).
set -euo pipefail
: "${NNODES:?set NNODES}" "${RDZV_HOST:?set RDZV_HOST (the first node)}"
GPUS=${GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
exec torchrun --nnodes="$NNODES" --nproc_per_node="$GPUS" \
  --rdzv_backend=c10d --rdzv_endpoint="$RDZV_HOST:${RDZV_PORT:-29500}" --rdzv_id="${RDZV_ID:-fedsim}" \
  -m fedsim run "$@"
