"""Success rate of the scripted pick-and-place expert on real LIBERO, per task.

    python benchmarks/expert_success.py --suite libero_spatial --tasks 0-9 --init-states 20 \\
        --workers 2 --out benchmarks/results/expert_success.json

Every task runs init states 0..N-1 once, without rendering, with the expert's default
translation noise (``--noise-std``). Worker processes (spawned, not forked) each build one
environment per task and reuse it across that task's init states. The JSON records per-task and
overall success, the command and commit; a bar chart is written next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from benchmarks.common import provenance  # noqa: E402

_PROGRESS = None  # per-worker queue for episode-level progress


def parse_tasks(spec: str) -> list[int]:
    """'0-9' or '0,3,5-7' -> sorted task ids."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def _init_worker(queue) -> None:
    global _PROGRESS
    _PROGRESS = queue


def run_task(job: tuple[str, int, int, float, int]) -> dict:
    """All init states of one task in one environment. Returns the task's record."""
    import numpy as np

    from mbpo_ray.config import EnvConfig, ExpertConfig
    from mbpo_ray.envs.expert import ScriptedExpert
    from mbpo_ray.envs.libero_env import LiberoEnv

    suite, task, n_init, noise_std, seed = job
    cfg = ExpertConfig(noise_std=noise_std)
    episodes = []
    with LiberoEnv(EnvConfig(suite=suite, task_id=task), seed=seed) as env:
        for init in range(n_init):
            expert = ScriptedExpert(cfg, np.random.default_rng([seed, task, init]))
            t0 = time.perf_counter()
            env.reset(init, render=False)
            expert.reset(env)
            done = False
            while not done:
                _, done = env.step(expert.act(env))
            episodes.append({
                "init_state": init,
                "success": env.success,
                "steps": env.t,
                "final_phase": expert.phase,
                "seconds": round(time.perf_counter() - t0, 2),
            })
            if _PROGRESS is not None:
                _PROGRESS.put(1)
        instruction = env.instruction
    steps = [e["steps"] for e in episodes]
    good = [e["steps"] for e in episodes if e["success"]]
    return {
        "task": task,
        "instruction": instruction,
        "success_rate": sum(e["success"] for e in episodes) / len(episodes),
        "episodes": len(episodes),
        "mean_steps": float(np.mean(steps)),
        "mean_steps_success": float(np.mean(good)) if good else None,
        "horizon": env.horizon,
        "per_episode": episodes,
    }


def run_all(suite: str, tasks: list[int], n_init: int, noise_std: float, seed: int, workers: int) -> list[dict]:
    """Run every task on a spawn-context process pool, with an episode-level progress bar."""
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    jobs = [(suite, t, n_init, noise_std, seed) for t in tasks]
    with ctx.Pool(workers, initializer=_init_worker, initargs=(progress,)) as pool, \
            tqdm(total=len(tasks) * n_init, desc=f"{suite} episodes") as bar:
        pending = pool.map_async(run_task, jobs, chunksize=1)
        while not pending.ready() or not progress.empty():
            with contextlib.suppress(queue.Empty):
                bar.update(progress.get(timeout=1.0))
        results = pending.get()
    return sorted(results, key=lambda r: r["task"])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(result["tasks"], key=int)
    rates = [100 * result["tasks"][t]["success_rate"] for t in tasks]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(tasks) + 2.0), 3.6), dpi=120)
    bars = ax.bar(tasks, rates, color=["#4477aa" if r >= 80 else "#cc6677" for r in rates])
    ax.bar_label(bars, labels=[f"{r:.0f}" for r in rates], fontsize=8)
    ax.axhline(80, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 105)
    ax.set_xlabel("task")
    ax.set_ylabel("success (%)")
    n = result["tasks"][tasks[0]]["episodes"]
    ax.set_title(
        f"Scripted expert on {result['suite']}: {100 * result['overall_success_rate']:.1f}% overall "
        f"({n} init states per task, noise {result['noise_std']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--tasks", default="0-9", help="task ids, e.g. 0-9 or 0,2,5-7")
    ap.add_argument("--init-states", type=int, default=20, help="init states 0..N-1 per task")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noise-std", type=float, default=None, help="default: ExpertConfig's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/expert_success.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON at --out")
    args = ap.parse_args()
    png = args.out.with_suffix(".png")
    if args.plot_only:
        return plot(json.loads(args.out.read_text()), png)

    from mbpo_ray.config import ExpertConfig

    noise = ExpertConfig().noise_std if args.noise_std is None else args.noise_std
    tasks = parse_tasks(args.tasks)
    t0 = time.perf_counter()
    records = run_all(args.suite, tasks, args.init_states, noise, args.seed, args.workers)
    seconds = time.perf_counter() - t0
    total = sum(r["episodes"] for r in records)
    result = {
        "suite": args.suite,
        "tasks": {str(r.pop("task")): r for r in records},
        "overall_success_rate": sum(r["success_rate"] * r["episodes"] for r in records) / total,
        "episodes": total,
        "noise_std": noise,
        "seed": args.seed,
        "workers": args.workers,
        **provenance(),
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    for t, r in result["tasks"].items():
        print(f"  task {t}: {100 * r['success_rate']:5.1f}%  mean steps {r['mean_steps']:.0f}  {r['instruction']}")
    print(f"overall {100 * result['overall_success_rate']:.1f}% over {total} episodes in {seconds:.0f} s")
    plot(result, png)


if __name__ == "__main__":
    main()
