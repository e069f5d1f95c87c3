"""Few-shot SFT success on libero_spatial: behaviour cloning on n demos per task, then LIBERO's evaluation.

    python benchmarks/sft_eval.py --store ~/.cache/mbpo-ray/demos/libero_spatial --demos-per-task 10 \\
        --tasks 0-9 --steps 3000 --episodes-per-task 50 --workers 2 --collect-missing

Trains one multi-task policy (``mbpo-ray sft``) on the first n successful demonstrations of each
task in the store (``--collect-missing`` first tops the store up with scripted-expert demos from
init states n.., so the demos start where the store left off), then evaluates it on the suite's
init states 0..49 of every task (``mbpo-ray eval``). Note: the scripted expert collects from the
same 50 fixed init states the evaluation uses, so demonstration and evaluation init states overlap
(the JSON lists the demos' episode ids; LIBERO's human demos start from other states).
Writes ``benchmarks/results/sft_eval.json`` with per-task and overall success, training minutes,
the command and the commit; the checkpoint and the evaluation's GIFs stay under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from benchmarks.common import provenance  # noqa: E402

SUITE = "libero_spatial"


def top_up(store: str, tasks: list[int], n: int, workers: int) -> None:
    """Collect scripted-expert demos for every task that has fewer than n successful ones."""
    from mbpo_ray.cli import main
    from mbpo_ray.replay import ReplayError, ReplayStore

    try:
        eps = ReplayStore.open(store).episodes
    except ReplayError:
        eps = []
    for t in tasks:
        mine = [e for e in eps if e.suite == SUITE and e.task_id == t]
        missing = n - sum(e.success and e.source == "demo" for e in mine)
        if missing > 0:  # the expert solves ~99%: ask for a few more, failures are not stored
            episodes = missing + max(1, missing // 10)
            code = main(["collect", "--suite", SUITE, "--task", str(t), "--episodes", str(episodes),
                         "--workers", str(workers), "--out", store,
                         f"--collect.first_init_state={len(mine) % 50}", f"--collect.seed={t}"])
            if code:
                raise SystemExit(f"collecting demos for task {t} failed")


def unseen(report: dict, task: int, first: int | None) -> dict:
    """Success on the init states >= ``first`` only (those no demonstration started from)."""
    if first is None:
        return {}
    eps = [e for e in report["episodes_detail"] if e["task_id"] == task and e["init_state"] >= first]
    return {"unseen_init_states_from": first, "unseen_episodes": len(eps),
            "unseen_success_rate": sum(e["success"] for e in eps) / len(eps) if eps else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="replay store with libero_spatial demonstrations")
    ap.add_argument("--demos-per-task", type=int, default=10)
    ap.add_argument("--tasks", default="0-9")
    ap.add_argument("--steps", type=int, default=3000, help="SFT steps")
    ap.add_argument("--episodes-per-task", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=0, help="0 = the suite's limit (protocol); smaller: smoke test")
    ap.add_argument("--collect-missing", action="store_true", help="top the store up with expert demos first")
    ap.add_argument("--unseen-from", type=int, default=None,
                    help="init states >= this were never demonstrated: their success is also reported apart")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate WORK/policy again (same checkpoint); training figures come from --out's JSON")
    ap.add_argument("--work", type=Path, help="checkpoint and eval folder (default: a new one under the cache)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sft_eval.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides such as --sft.lr=1e-4 (after --)")
    args = ap.parse_args()

    from actors.env_runner import evaluate_checkpoint
    from mbpo_ray.config import build_config, default_cache_dir, parse_task_ids
    from mbpo_ray.policy.sft import train_sft

    work = args.work or Path(default_cache_dir()) / "bench" / f"sft_eval-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.collect_missing:
        top_up(os.path.expanduser(args.store), parse_task_ids(args.tasks), args.demos_per_task, args.workers)
    cfg = build_config(overrides=[
        f"--env.suite={SUITE}", f"--sft.tasks={args.tasks}", f"--sft.demos_per_task={args.demos_per_task}",
        f"--sft.steps={args.steps}", f"--sft.seed={args.seed}", f"--eval.suite={SUITE}", f"--eval.tasks={args.tasks}",
        f"--eval.episodes_per_task={args.episodes_per_task}", f"--eval.workers={args.workers}",
        f"--eval.seed={args.seed}", f"--eval.max_steps={args.max_steps}", *args.overrides])
    if args.eval_only:
        prev = json.loads(args.out.read_text())
        meta = json.loads((work / "policy" / "policy.json").read_text())
        if prev["demo_episode_ids"] != meta["demos"]:
            raise SystemExit(f"{args.out} describes another checkpoint than {work / 'policy'}: run without --eval-only")
        train = {"train_minutes": prev["train_minutes"], "steps": prev["sft_steps"],
                 "steps_per_s": prev["sft_steps_per_s"], "params": prev["policy_params"],
                 "command": prev.get("train_command", prev["command"]), "commit": prev.get("train_commit", prev["commit"])}
    else:
        train = train_sft(os.path.expanduser(args.store), str(work / "policy"), cfg)
    t0 = time.perf_counter()
    report = evaluate_checkpoint(str(work / "policy"), cfg, str(work / "eval"))
    meta = json.loads((work / "policy" / "policy.json").read_text())
    result = {
        "suite": SUITE,
        "demos_per_task": args.demos_per_task,
        "tasks": {t: {"success_rate": r["success_rate"], "episodes": r["episodes"], "instruction": r["instruction"],
                      **unseen(report, int(t), args.unseen_from)}
                  for t, r in report["tasks"].items()},
        "overall_success_rate": report["success_rate"],
        "episodes": report["episodes"],
        "train_minutes": train["train_minutes"],
        "sft_steps": train["steps"],
        "sft_steps_per_s": round(train["steps_per_s"], 3),
        "policy_params": train["params"],
        "demo_episode_ids": meta["demos"],
        "eval_minutes": round((time.perf_counter() - t0) / 60, 2),
        "eval_seconds_per_episode": round(report["seconds_per_episode"], 2),
        "workers": report["workers"],
        "greedy": report["greedy"],
        "max_steps": args.max_steps or None,
        "config": {"policy": cfg.to_dict()["policy"], "sft": cfg.to_dict()["sft"]},
        **({"train_command": train["command"], "train_commit": train["commit"]} if args.eval_only else {}),
        **provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    for t, r in result["tasks"].items():
        print(f"  task {t}: {100 * r['success_rate']:5.1f}% of {r['episodes']}")
    print(f"overall {100 * result['overall_success_rate']:.1f}%; SFT {result['train_minutes']:.1f} min; "
          f"checkpoint and GIFs in {work}")


if __name__ == "__main__":
    main()
