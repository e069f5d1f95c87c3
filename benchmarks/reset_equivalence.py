"""Is an in-place reset (``env.soft_reset``, the default) the rebuild LIBERO's protocol does, on every task?

    python benchmarks/reset_equivalence.py [--suites libero_spatial libero_object libero_goal libero_10]
        [--tasks 0-9] [--steps 12]

For each task, the same four episodes run twice, once with the scene rebuilt at every reset and once
reset in place: init state 1, init state 0, init state 1 again, and a restore of the state the third
one ended in, each followed by ``--steps`` fixed actions. A task passes when the first frames (head
and wrist), the simulator states after the actions and the last head frames are bit for bit equal
between the two, and when the two episodes from init state 1 are equal within each (an episode does
not depend on the ones the env ran before). The reset seconds are means over the four resets, the
first of which builds the scene in both modes. Writes benchmarks/results/reset_equivalence.json after
every suite (an interrupted run keeps the suites it finished).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import provenance, write_result  # noqa: E402

SEQUENCE = (1, 0, 1, None)  # init states; None: restore the state the previous episode ended in


def episodes(suite: str, task: int, soft: bool, steps: int) -> tuple[list[np.ndarray], float]:
    """Every array the four episodes produce, and the seconds spent in resets and restores."""
    from mbpo_ray.config import EnvConfig
    from mbpo_ray.envs import LiberoEnv

    actions = np.tile([0.4, -0.3, 0.2, 0.0, 0.1, 0.0, 1.0], (steps, 1))
    out, state, spent = [], None, 0.0
    with LiberoEnv(EnvConfig(suite=suite, task_id=task, image_size=32, soft_reset=soft)) as env:
        for init in SEQUENCE:
            t0 = time.perf_counter()
            first = env.reset(init) if init is not None else env.restore(state)
            spent += time.perf_counter() - t0
            for a in actions:
                env.step(a)
            state = env.sim_state()
            out += [first.head, first.wrist, state, env.observe().head]
    return out, spent


def check_task(suite: str, task: int, steps: int) -> dict:
    soft, soft_s = episodes(suite, task, True, steps)
    hard, hard_s = episodes(suite, task, False, steps)
    same = all(np.array_equal(x, y) for x, y in zip(soft, hard, strict=True))
    history_free = all(np.array_equal(x, y) for x, y in zip(hard[:4], hard[8:12], strict=True))
    return {"suite": suite, "task": task, "bit_for_bit": same, "history_free": history_free,
            "reset_seconds_rebuilt": round(hard_s / len(SEQUENCE), 3),
            "reset_seconds_in_place": round(soft_s / len(SEQUENCE), 3)}


def main() -> None:
    from mbpo_ray.config import parse_task_ids

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", nargs="+", default=["libero_spatial", "libero_object", "libero_goal", "libero_10"])
    ap.add_argument("--tasks", default="0-9")
    ap.add_argument("--steps", type=int, default=12, help="fixed actions after every reset")
    ap.add_argument("--name", default="reset_equivalence")
    args = ap.parse_args()
    prov = provenance()
    rows: list[dict] = []
    for suite in args.suites:
        for task in parse_task_ids(args.tasks):
            rows.append(check_task(suite, task, args.steps))
            r = rows[-1]
            print(f"{suite} task {task}: {'same' if r['bit_for_bit'] else 'DIFFERENT'}, "
                  f"{'history-free' if r['history_free'] else 'DEPENDS ON HISTORY'}", flush=True)
        write_result(args.name, summary(rows, args), prov)
    if not all(r["bit_for_bit"] and r["history_free"] for r in rows):
        sys.exit(1)


def summary(rows: list[dict], args) -> dict:
    return {"tasks_checked": len(rows), "bit_for_bit": sum(r["bit_for_bit"] for r in rows),
            "history_free": sum(r["history_free"] for r in rows),
            "reset_seconds_rebuilt_mean": round(float(np.mean([r["reset_seconds_rebuilt"] for r in rows])), 3),
            "reset_seconds_in_place_mean": round(float(np.mean([r["reset_seconds_in_place"] for r in rows])), 3),
            "steps_after_reset": args.steps, "sequence": ["init 1", "init 0", "init 1", "restore"], "rows": rows}


if __name__ == "__main__":
    main()
