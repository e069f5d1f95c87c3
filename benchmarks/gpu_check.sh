#!/usr/bin/env bash
# GPU readiness in one short call (under 8 minutes on one GPU):
#   1. the world-model engines, vLLM vs transformers, at batch 1/16/64/256 (random weights, default size);
#   2. imagination throughput, the UMM (vLLM, HF) against the Ctrl-World-style video-diffusion baseline;
#   3. two `mbpo-ray train` iterations on the GPU (vLLM replica, 2 learner ranks in bfloat16 over NCCL,
#      weights broadcast to the replica), from random inputs.
# Results: benchmarks/results/gpu_check_{engine_throughput,imagination_throughput,train}.json (+ PNGs),
# each naming the commit, and gpu_check.json with the GPU and every step's time.
#
#   benchmarks/gpu_check.sh          on a machine with a CUDA GPU (EXTRAS=dev,vllm-gpu installed)
#   benchmarks/gpu_check.sh --dry    on a CPU: the same steps at toy sizes, results in $OUT (default: a
#                                    temporary folder), nothing under benchmarks/results touched
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export MUJOCO_GL=${MUJOCO_GL:-egl}
if [ "${1:-}" = "--dry" ]; then
  DRY=1
  export MBPO_RESULTS_DIR=${OUT:-$(mktemp -d -t gpu-check-XXXXXX)}
  ENGINE_ARGS=(--batches 1 4 --rounds 1)
  IMAGINE_ARGS=(--batches 1 --rounds 1)
  TRAIN_ARGS=(--dry)
else
  DRY=0
  command -v nvidia-smi >/dev/null && nvidia-smi -L | grep -q GPU || {
    echo "gpu_check.sh: no NVIDIA GPU found (nvidia-smi -L); on a CPU run: benchmarks/gpu_check.sh --dry" >&2
    exit 2
  }
  ENGINE_ARGS=(--batches 1 16 64 256 --rounds 2)
  IMAGINE_ARGS=(--batches 1 16 64 --rounds 1)
  TRAIN_ARGS=()
fi
RESULTS=${MBPO_RESULTS_DIR:-benchmarks/results}
mkdir -p "$RESULTS"
declare -A SECONDS_OF
step() {  # name, command...
  local name=$1 t0=$SECONDS
  shift
  echo "== $name: $*"
  "$@"
  SECONDS_OF[$name]=$((SECONDS - t0))
}
step engine "$PY" benchmarks/engine_throughput.py "${ENGINE_ARGS[@]}" --name gpu_check_engine_throughput
step imagination "$PY" benchmarks/imagination_throughput.py "${IMAGINE_ARGS[@]}" --name gpu_check_imagination_throughput
step train "$PY" benchmarks/gpu_check_train.py "${TRAIN_ARGS[@]}"
DEVICE=$([ $DRY = 1 ] && echo cpu || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
"$PY" - "$RESULTS" "$DEVICE" "$DRY" "${SECONDS_OF[engine]}" "${SECONDS_OF[imagination]}" "${SECONDS_OF[train]}" <<'EOF'
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
from benchmarks.common import provenance

results, device, dry, *secs = sys.argv[1:]
files = {n: json.loads((Path(results) / f"gpu_check_{n}.json").read_text())
         for n in ("engine_throughput", "imagination_throughput", "train")}
engine = files["engine_throughput"]
summary = {"device": device, "dry": dry == "1", "seconds": dict(zip(("engine", "imagination", "train"), map(int, secs))),
           "vllm_over_hf": {k: v["ratio"] for k, v in engine.items() if isinstance(v, dict) and "ratio" in v},
           "train_seconds": files["train"]["seconds"], **provenance()}
summary["command"] = "benchmarks/gpu_check.sh" + (" --dry" if dry == "1" else "")
(Path(results) / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
echo "gpu_check: results in $RESULTS"
