"""Env steps/s on real LIBERO: both cameras rendered every step vs only at chunk ends; and the
seconds an episode reset and a restore from a recorded state take, with the scene rebuilt every time
vs reset in place (``env.soft_reset``, the default: the same episodes, see ``benchmarks/reset_equivalence.py``).

    python benchmarks/env_render.py [--steps 200] [--image-size 128] [--resets 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import bar_chart, read_result, write_result  # noqa: E402
from mbpo_ray.config import EnvConfig  # noqa: E402
from mbpo_ray.envs import LiberoEnv  # noqa: E402


def run_mode(env: LiberoEnv, mode: str, steps: int, rng: np.random.Generator) -> float:
    """Seconds spent in ``steps`` env steps (resets excluded)."""
    h = env.cfg.chunk_size
    spent, done = 0.0, steps
    init = 0
    while done > 0:
        env.reset(init_state=init % 50, render=False)
        init += 1
        while done > 0 and env.t + h <= env.horizon:
            chunk = np.clip(rng.normal(0, 0.2, (h, 7)), -1, 1)
            t0 = time.perf_counter()
            if mode == "every_step":
                for a in chunk:
                    env.step(a, render=True)
            else:
                env.step_chunk(chunk)
            spent += time.perf_counter() - t0
            done -= h
    return spent


def time_resets(cfg: EnvConfig, soft: bool, n: int) -> dict[str, float]:
    """Mean seconds of ``reset`` (init states 1..n) and of ``restore`` (of the state after a few steps),
    after the env's first reset (which always builds the scene)."""
    from dataclasses import replace

    with LiberoEnv(replace(cfg, soft_reset=soft)) as env:
        env.reset(0, render=False)
        for _ in range(3):
            env.step(np.zeros(7))
        state = env.sim_state()
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            env.reset(i, render=False)
        t1 = time.perf_counter()
        for _ in range(n):
            env.restore(state, render=False)
        t2 = time.perf_counter()
    return {"reset": round((t1 - t0) / n, 3), "restore": round((t2 - t1) / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200, help="env steps per mode and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (machine drift hits both)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--resets", type=int, default=6, help="resets and restores timed per reset mode")
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON of the last run")
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result("env_render"))
    cfg = EnvConfig(suite=args.suite, task_id=args.task, image_size=args.image_size)
    rng = np.random.default_rng(0)
    secs = {"every_step": 0.0, "chunk_end": 0.0}
    with LiberoEnv(cfg) as env:
        for _ in range(args.rounds):
            for mode in secs:
                secs[mode] += run_mode(env, mode, args.steps, rng)
    rebuild, in_place = time_resets(cfg, False, args.resets), time_resets(cfg, True, args.resets)
    total = args.steps * args.rounds
    every, chunk = total / secs["every_step"], total / secs["chunk_end"]
    result = {
        "steps_per_s_render_every_step": round(every, 2),
        "steps_per_s_render_chunk_end": round(chunk, 2),
        "ratio": round(chunk / every, 2),
        "steps_per_mode": total,
        "reset_seconds": {"rebuild": rebuild["reset"], "in_place": in_place["reset"]},
        "restore_seconds": {"rebuild": rebuild["restore"], "in_place": in_place["restore"]},
        "resets_timed": args.resets,
        "chunk_size": cfg.chunk_size,
        "image_size": cfg.image_size,
        "cameras": ["agentview", "robot0_eye_in_hand"],
        "task": f"{cfg.suite}/{cfg.task_id}",
        "renderer": os.environ["MUJOCO_GL"],
    }
    write_result("env_render", result)
    plot(result)


def plot(r: dict) -> None:
    every, chunk = r["steps_per_s_render_every_step"], r["steps_per_s_render_chunk_end"]
    bar_chart("env_render", ["render every step", f"render at chunk end (H={r['chunk_size']})"],
              [every, chunk], "env steps / s", f"LIBERO {r['task']}, 2 cameras {r['image_size']}x"
              f"{r['image_size']}: {r['ratio']:.1f}x faster rendering only at chunk ends")


if __name__ == "__main__":
    main()
