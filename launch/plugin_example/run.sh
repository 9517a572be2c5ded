#!/usr/bin/env bash
# Run the plug-in example (FedAvg on 4 silos, your model and data; --set
# algorithm=my_algorithm:ServerMomentum for your algorithm too) on this machine: the plug-in
# modules are found on PYTHONPATH (or in the working directory).
#   launch/plugin_example/run.sh [--nproc K] [--set key=value ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec python -m fedsim run "$here/experiment.yaml" "$@"
