#!/usr/bin/env bash
# Submit VLA-MBPO training to a Ray cluster. Paths must be visible from every node (a shared mount
# such as /mnt/cluster_storage, or object storage for the replay store).
#   RAY_ADDRESS=http://HEAD:8265 cluster/submit.sh SHARED_DIR [--mbpo.field=value ...]
# SHARED_DIR holds sft/ (policy), world_model/ and replay/; the run goes to SHARED_DIR/runs/DATE.
# MBPO_CONFIG picks another config (default configs/cluster.yaml; configs/smoke.yaml is a short
# CPU job that checks a cluster end to end). The script exits non-zero when the job fails.
set -euo pipefail
shared=${1:?usage: cluster/submit.sh SHARED_DIR [overrides]}; shift
shared=$(cd "$shared" && pwd)
cd "$(dirname "$0")/.."
exec ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" \
  --runtime-env cluster/runtime_env.yaml -- \
  mbpo-ray train --config "${MBPO_CONFIG:-configs/cluster.yaml}" \
    --policy "$shared/sft" --world-model "$shared/world_model" --store "$shared/replay" \
    --out "$shared/runs/$(date +%Y%m%d-%H%M%S)" "$@"
