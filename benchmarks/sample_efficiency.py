"""Success against real env steps: SFT, online RL on real LIBERO and VLA-MBPO with real data, from
the same few-shot SFT checkpoint, with the project's own loop (`mbpo-ray train`).

    python benchmarks/sample_efficiency.py --policy SFT_CKPT --sft-eval SFT_EVAL_JSON --world-model WM_CKPT \\
        --store DEMO_STORE --work DIR [--tasks 0-3] [--iterations 12] [--eval-every 4] [--episodes 50]
        [--online-episodes 16] [--real-every 2] [--real-episodes 8] [--branches 128] [--group-size 8]
        [--seed 0] [--objective grpo] [--name sample_efficiency] [--set mbpo.FIELD=VALUE ...]
        [--run-only online mbpo] [--extend] [--starts-store STORE]

Every run starts from a store holding only the SFT policy's demonstrations (its own copy: both
methods append what they roll out). ``online``: ``mbpo.mode=online``, each iteration the env runners
roll the current policy out ``--online-episodes`` times (groups of ``--group-size`` from one init
state) and the objective (``--objective``: group-relative by default; ``bc`` clones the successful
episodes, self-imitation inside the loop) learns from those real episodes. ``mbpo``: group-relative
VLA-MBPO in the world model, with ``--real-episodes`` real rollouts of the current policy every
``--real-every`` iterations appended to the store (branch starts, and world-model finetuning every
``--real-every`` iterations). Both evaluate every ``--eval-every`` iterations on init states
0..episodes-1 of each task (greedy, LIBERO's protocol); a point's real env steps are the
demonstrations' plus the run's rollouts (evaluation episodes are not training data). Reported: each
method's curve, its last point's exact McNemar test against SFT on the same init states, and the real
env steps online RL needed to reach VLA-MBPO's last success (or that it did not, and how far past
VLA-MBPO's budget it ran). ``--starts-store`` (with ``--real-every 0``) gives the ``mbpo`` run a
recorded store instead, read in place, demonstrations and the policy's rollouts alike (the episodes
its world model trained on, say): its branches start from those, and every episode of ``--tasks`` in
it counts in its real-data budget. An interrupted run starts over; with ``--extend`` a complete run of fewer
iterations continues from its last checkpoint (``mbpo-ray train --resume``). Writes
benchmarks/results/NAME.{json,png} (``--name``, default sample_efficiency).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from benchmarks.common import mcnemar_exact, provenance, save_figure, write_result  # noqa: E402
from benchmarks.fidelity import budget_store, demo_budget, paired_outcomes  # noqa: E402
from benchmarks.self_imitation import made_by  # noqa: E402

METHODS = ("online", "mbpo")


def run_argv(args, method: str, store: Path, out: Path) -> list[str]:
    argv = ["train", "--policy", args.policy, "--store", str(store), "--out", str(out),
            f"--mbpo.objective={args.objective}", f"--mbpo.group_size={args.group_size}", f"--mbpo.seed={args.seed}",
            f"--mbpo.iterations={args.iterations}", f"--mbpo.tasks={args.tasks}",
            f"--mbpo.eval_episodes={args.episodes}", f"--mbpo.eval_every={args.eval_every}",
            "--mbpo.learners=1", "--mbpo.env_runners=2", "--mbpo.runner_cpus=0.5", "--mbpo.learner_cpus=0.25",
            f"--mbpo.checkpoint_every={args.eval_every}"]
    if method == "online":
        return [*argv, "--mbpo.mode=online", f"--mbpo.branches={args.online_episodes}",
                *(f"--{x}" for x in args.set)]
    return [*argv, "--world-model", args.world_model, f"--mbpo.branches={args.branches}", "--mbpo.n_chunks=2",
            f"--mbpo.real_every={args.real_every}", f"--mbpo.real_episodes={args.real_episodes}",
            f"--mbpo.wm_finetune_every={args.real_every}", "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1",
            "--mbpo.worker_cpus=0.5", "--mbpo.wm_learner_cpus=0.25", *(f"--{x}" for x in args.set)]


def store_steps(uri: str, tasks: list[int]) -> int:
    """The env steps of every episode of ``tasks`` in the store ``uri`` (a --starts-store's budget)."""
    from mbpo_ray.replay import ReplayStore

    return sum(e.env_steps for e in ReplayStore.open(uri).episodes if e.task_id in tasks)


def metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def evaluated(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "eval/success" in r]


def run(args, method: str, prov: dict) -> Path | None:
    """The run's folder once its last evaluation is in (a complete run is kept, with the command and
    commit that made it in its ``made_by.json``); None when ``--run-only`` leaves it out and it is not
    complete."""
    from mbpo_ray.cli import main

    out, store = Path(args.work) / f"{method}_seed{args.seed}", Path(args.work) / f"{method}_seed{args.seed}_store"
    done = evaluated(metrics(out))
    if done and done[-1]["iteration"] == args.iterations:
        print(f"{out} is complete: kept", flush=True)
        return out
    if args.run_only is not None and method not in args.run_only:
        return None
    if args.extend and done and done[-1]["iteration"] < args.iterations and (out / "checkpoint" / "state.json").exists():
        return extend(args, out, prov)
    shutil.rmtree(out, ignore_errors=True)  # an interrupted run starts over
    if method == "mbpo" and args.starts_store:
        store = Path(args.starts_store)  # read in place: with --real-every 0 nothing is appended
    else:  # from a fresh copy of the demonstrations
        shutil.rmtree(store, ignore_errors=True)
        budget_store(args.store, args.policy, store)
    argv = run_argv(args, method, store, out)
    if main(argv):
        raise SystemExit(f"mbpo-ray {' '.join(argv)} failed")
    made_by(out, "run", prov)
    return out


def extend(args, out: Path, prov: dict) -> Path:
    """A complete run continued to ``--iterations`` from its last checkpoint (``mbpo-ray train --resume``
    with the run's own config; the step's command and commit kept next to the run's)."""
    from mbpo_ray.cli import main

    argv = ["train", "--resume", str(out), f"--mbpo.iterations={args.iterations}"]
    print(f"extending {out} to {args.iterations} iterations", flush=True)
    if main(argv):
        raise SystemExit(f"mbpo-ray {' '.join(argv)} failed")
    made_by(out, f"extend_to_{args.iterations}", prov)
    return out


def curve(sft: dict, out: Path, start: dict) -> dict:
    """A run's points from ``start`` (SFT at the demonstrations' env steps) through its evaluations."""
    rows = metrics(out)
    evals = evaluated(rows)
    demo_steps = start["real_env_steps"]
    points = [start]
    for r in evals:
        base, mine, inits = paired_outcomes(sft, out, r["iteration"])
        points.append({"iteration": r["iteration"], "real_env_steps": demo_steps + int(r["real/env_steps"]),
                       "success_rate": round(float(r["eval/success"]), 4), "vs_sft": mcnemar_exact(base, mine),
                       "by_task": {k.rsplit("task", 1)[1]: v for k, v in r.items() if k.startswith("eval/success_task")}})
    steps = made_by(out)
    return {"points": points, "final_vs_sft": points[-1]["vs_sft"], "init_states": inits, "run": str(out.name),
            "made_by": steps.get("run"), "extended_by": {k: v for k, v in steps.items() if k.startswith("extend_to_")},
            # the batch's success per branch, each iteration (imagined in mbpo mode, real episodes online)
            "batch_success_by_iteration": [round(float(x["imagine/reward_mean"]), 4) for x in rows]}


def reach(online: list[dict], target: float, budget: int) -> dict:
    """The real env steps online RL needed to reach ``target`` success, or how far it ran without."""
    hit = next((p for p in online if p["iteration"] > 0 and p["success_rate"] >= target), None)
    last = online[-1]["real_env_steps"]
    return {"target_success": target, "mbpo_real_env_steps": budget,
            "online_real_env_steps_to_reach": hit["real_env_steps"] if hit else None,
            "online_ran_to_real_env_steps": last, "online_budget_ratio": round(last / budget, 2)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, text in (("--policy", "the SFT checkpoint"), ("--sft-eval", "eval.json of `mbpo-ray eval` on it"),
                       ("--world-model", "the world model VLA-MBPO starts with"),
                       ("--store", "a store holding the SFT demonstrations"), ("--work", "run folders")):
        ap.add_argument(name, required=True, help=text)
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=4, dest="eval_every")
    ap.add_argument("--episodes", type=int, default=50, help="init states per task in every evaluation")
    ap.add_argument("--online-episodes", type=int, default=16, dest="online_episodes",
                    help="real episodes per online iteration")
    ap.add_argument("--real-every", type=int, default=2, dest="real_every")
    ap.add_argument("--real-episodes", type=int, default=8, dest="real_episodes")
    ap.add_argument("--branches", type=int, default=128, help="imagined branches per VLA-MBPO iteration")
    ap.add_argument("--group-size", type=int, default=8, dest="group_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objective", default="grpo", choices=("grpo", "ppo", "bc"), help="mbpo.objective of both runs")
    ap.add_argument("--name", default="sample_efficiency", help="result file name")
    ap.add_argument("--set", nargs="*", default=[], metavar="mbpo.FIELD=VALUE", help="overrides for both runs")
    ap.add_argument("--run-only", nargs="+", choices=METHODS, dest="run_only")
    ap.add_argument("--starts-store", dest="starts_store", metavar="STORE",
                    help="the mbpo run's store, read in place (needs --real-every 0): branch starts from its episodes")
    ap.add_argument("--extend", action="store_true",
                    help="continue a complete run with fewer iterations from its checkpoint instead of starting over")
    return ap


def main() -> None:
    args = parser().parse_args()
    prov = provenance()  # the commit the runs start from (the tree may change while they run)
    for name in ("policy", "world_model", "store", "work", "sft_eval", "starts_store"):
        if getattr(args, name) is not None:
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    if args.starts_store and args.real_every:
        raise SystemExit("--starts-store is read in place: run it with --real-every 0 (no rollouts appended)")
    if args.iterations % args.eval_every:
        raise SystemExit(f"--iterations {args.iterations} is not a multiple of --eval-every {args.eval_every}: "
                         "the last iteration would not be evaluated")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    sft = json.loads(Path(args.sft_eval).read_text())
    ids, demo_steps = demo_budget(args.store, args.policy)
    from mbpo_ray.config import parse_task_ids

    tasks = parse_task_ids(args.tasks)
    if sorted(int(t) for t in sft["tasks"]) != tasks:
        raise SystemExit(f"{args.sft_eval} evaluated tasks {sorted(sft['tasks'])}, not --tasks {args.tasks}")
    sft_rate = round(sum(r["success_rate"] for r in sft["tasks"].values()) / len(sft["tasks"]), 4)
    start = {"iteration": 0, "real_env_steps": demo_steps, "success_rate": sft_rate}
    methods = {"sft": {"points": [start]}}
    starts = {"online": start, "mbpo": start if not args.starts_store  # a recorded store is the run's budget
              else start | {"real_env_steps": store_steps(args.starts_store, tasks)}}
    for m in METHODS:
        out = run(args, m, prov)
        if out is not None:
            methods[m] = curve(sft, out, starts[m])
    result = {"tasks": tasks, "demonstrations": len(ids), "seed": args.seed,
              "methods": {m: v["points"] for m, v in methods.items()},
              "detail": {m: {k: v for k, v in d.items() if k != "points"} for m, d in methods.items() if m != "sft"},
              "settings": {k: getattr(args, k) for k in ("iterations", "eval_every", "episodes", "online_episodes",
                                                         "real_every", "real_episodes", "branches", "group_size", "objective")}
              | {"overrides": [f"--{x}" for x in args.set], "starts_store": args.starts_store and Path(args.starts_store).name}}
    if {"online", "mbpo"} <= methods.keys():
        final = methods["mbpo"]["points"][-1]
        result["online_to_reach_mbpo"] = reach(methods["online"]["points"], final["success_rate"],
                                               final["real_env_steps"])
    write_result(args.name, result, prov)
    plot(result, args.name)


def plot(r: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    what = {"grpo": "group-relative", "ppo": "PPO", "bc": "cloning the successes"}[r["settings"].get("objective", "grpo")]
    style = {"sft": ("#999999", "SFT (demonstrations only)"), "online": ("#cc6677", f"online RL ({what})"),
             "mbpo": ("#228833", f"VLA-MBPO ({what}, real data every K iterations)")}
    for m, pts in r["methods"].items():
        colour, label = style[m]
        ax.plot([p["real_env_steps"] for p in pts], [100 * p["success_rate"] for p in pts], color=colour,
                marker="o", label=label)
    ax.set_xlabel("real env steps (demonstrations + rollouts used for training)")
    ax.set_ylabel(f"LIBERO success, tasks {','.join(map(str, r['tasks']))} (%)")
    ax.set_title("Success vs real-data budget, from one SFT checkpoint", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
