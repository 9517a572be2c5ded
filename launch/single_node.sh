#!/usr/bin/env bash
# One node, one silo per GPU (NCCL on cuda:LOCAL_RANK).
# Usage: GPUS=8 launch/single_node.sh CONFIG [--set k=v ...]
set -euo pipefail
GPUS=${GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
exec torchrun --standalone --nproc_per_node="$GPUS" -m fedsim run "$@"
