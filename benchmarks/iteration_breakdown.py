"""Where one VLA-MBPO iteration spends its time, with 1 and 2 world-model workers.

    python benchmarks/iteration_breakdown.py --policy SFT_CKPT --world-model WM_CKPT --store STORE \\
        [--iterations 3] [--branches 32] [--learners 2]

Runs ``mbpo-ray train`` (the real loop on a local Ray cluster) twice from the same checkpoints, on a
copy of the store (real rollouts are appended to it), with ``mbpo.max_staleness=0`` so the phases
run one after another and can be told apart: imagine (world-model workers), learn (PPO on the
learner group), sync (rank 0 publishing + the slowest replica pulling the new weights), real data
(env runners in LIBERO, appended to the store) and eval. Means over the iterations after the first
(engine start-up and first-call compilation excluded). Writes
``benchmarks/results/iteration_breakdown.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import add_loop_inputs, bar_chart, write_result  # noqa: E402

PHASES = {"imagine_s": "time/imagine_s", "learn_s": "time/update_s", "sync_s": "time/sync_s",
          "real_s": "time/real_s", "eval_s": "time/eval_s"}


def run(args, workers: int, root: Path) -> dict:
    from mbpo_ray.cli import main

    store = root / f"store{workers}"
    shutil.copytree(os.path.expanduser(args.store), store)
    out = root / f"run{workers}"
    code = main(["train", "--policy", args.policy, "--world-model", args.world_model, "--store", str(store),
                 "--out", str(out), f"--mbpo.iterations={args.iterations}", f"--mbpo.branches={args.branches}",
                 f"--mbpo.wm_workers_min={workers}", f"--mbpo.wm_workers_max={workers}",
                 f"--mbpo.learners={args.learners}", "--mbpo.max_staleness=0", "--mbpo.real_every=1",
                 "--mbpo.real_episodes=1", "--mbpo.eval_every=1", "--mbpo.eval_episodes=1", "--mbpo.tasks=0-1",
                 "--mbpo.worker_cpus=0.5", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.5"])
    if code:
        raise SystemExit(f"mbpo-ray train failed with {code}")
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    r = {k: float(np.mean([x.get(v, 0.0) for x in logs])) for k, v in PHASES.items()}
    r["total_s"] = float(np.mean([x["time/iteration_s"] for x in logs]))
    r["chunk_transitions_per_s"] = float(np.mean([x["imagine/chunk_transitions_per_s"] for x in logs]))
    r["iterations_measured"] = len(logs)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_loop_inputs(ap)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--branches", type=int, default=32)
    ap.add_argument("--learners", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="iteration_breakdown-"))
    try:
        result = {f"{w}_worker{'s' if w > 1 else ''}": run(args, w, root) for w in (1, 2)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["sync_fraction"] = result["1_worker"]["sync_s"] / result["1_worker"]["total_s"]
    result["setup"] = {"iterations": args.iterations, "branches": args.branches, "learners": args.learners,
                       "n_chunks": 2, "real_episodes_per_iteration": 1, "eval_episodes_per_task": 1}
    write_result("iteration_breakdown", result)
    labels = [f"{k.replace('_', ' ')}: {p[:-2]}" for k in ("1_worker", "2_workers") for p in PHASES]
    values = [result[k][p] for k in ("1_worker", "2_workers") for p in PHASES]
    bar_chart("iteration_breakdown", labels, values, ylabel="seconds per iteration",
              title="VLA-MBPO iteration: time per phase, 1 vs 2 world-model workers (phases in sequence)")


if __name__ == "__main__":
    main()
