"""benchmarks/gpu_check.sh --dry: the GPU readiness script's every step (engines, imagination against
the diffusion baseline, two training iterations) at toy sizes on a CPU, results in a folder of the
test's own (benchmarks/results untouched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_mode_runs_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry"] and summary["device"] == "cpu" and set(summary["seconds"]) == {"engine", "imagination", "train"}
    assert summary["vllm_over_hf"] and all(r > 0 for r in summary["vllm_over_hf"].values())
    train = json.loads((tmp_path / "gpu_check_train.json").read_text())
    assert [x["iteration"] for x in train["iterations"]] == [1, 2]
    assert all(x["sync/policy/broadcast_failures"] == 0 and x["learner/rank_divergence"] == 0 for x in train["iterations"])
    assert (tmp_path / "gpu_check_imagination_throughput.json").is_file()


def test_gpu_check_refuses_a_machine_without_a_gpu():
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": "/usr/bin:/bin"})  # no nvidia-smi on this PATH
    assert run.returncode == 2 and "--dry" in run.stderr
