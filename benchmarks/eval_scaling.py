"""Evaluation throughput with 1 and 2 env-runner actors: the same episodes, episodes per minute.

    python benchmarks/eval_scaling.py --checkpoint CKPT --tasks 0-1 --episodes-per-task 10

Runs ``mbpo-ray eval``'s protocol twice on one checkpoint (greedy, so both runs must give the same
outcome per episode; the JSON says whether they did). Time includes starting the actors and
building each task's environment, as a user of ``mbpo-ray eval`` sees it. Writes
``benchmarks/results/eval_scaling.json`` with episodes per minute for each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from benchmarks.common import provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="policy folder made by `mbpo-ray sft`")
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--tasks", default="0-1")
    ap.add_argument("--episodes-per-task", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=0, help="0 = the suite's limit; smaller: smoke test")
    ap.add_argument("--work", type=Path, default=None, help="eval folders (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_scaling.json"))
    args = ap.parse_args()

    import tempfile

    from actors.env_runner import evaluate_checkpoint
    from mbpo_ray.config import build_config
    from mbpo_ray.policy import read_policy_meta

    read_policy_meta(args.checkpoint)
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_scaling-"))
    rates, outcomes, reports = {}, {}, {}
    for workers in (1, 2):
        cfg = build_config(overrides=[f"--eval.suite={args.suite}", f"--eval.tasks={args.tasks}",
                                      f"--eval.episodes_per_task={args.episodes_per_task}",
                                      f"--eval.workers={workers}", f"--eval.max_steps={args.max_steps}",
                                      "--eval.videos=0"])
        r = evaluate_checkpoint(args.checkpoint, cfg, str(work / f"workers{workers}"))
        rates[workers] = 60.0 * r["episodes"] / r["seconds"]
        outcomes[workers] = [(e["task_id"], e["init_state"], e["success"], e["steps"]) for e in r["episodes_detail"]]
        reports[workers] = r
        print(f"{workers} worker(s): {r['episodes']} episodes in {r['seconds']:.0f} s = {rates[workers]:.2f} ep/min")
    result = {
        "episodes_per_min_1_worker": round(rates[1], 3),
        "episodes_per_min_2_workers": round(rates[2], 3),
        "ratio": round(rates[2] / rates[1], 3),
        "episodes": reports[1]["episodes"],
        "suite": args.suite,
        "tasks": args.tasks,
        "seconds": {"1_worker": reports[1]["seconds"], "2_workers": reports[2]["seconds"]},
        "success_rate": reports[1]["success_rate"],
        "same_outcomes": outcomes[1] == outcomes[2],
        "max_steps": args.max_steps or None,
        "cpu_cores": os.cpu_count(),
        **provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; 2 workers / 1 worker = {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
