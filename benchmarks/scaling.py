"""Scaling on a local Ray cluster: imagined chunk-transitions/s with 1 and 2 world-model workers, and
learner samples/s with 1 and 2 DDP learner ranks.

    python benchmarks/scaling.py --policy SFT_CKPT --world-model WM_CKPT --store STORE \\
        [--branches 64] [--calls 3] [--n-chunks 2]

Every replica and every rank gets one CPU (one thread), as each gets its own GPU on a cluster: the
question is how throughput grows with replicas at a fixed cost per replica. The world-model pool
(``actors/world_model_pool.py``, vLLM engines) imagines ``--branches`` branches per call, split
over its workers; the learner group (``learners/policy_learner.py``) runs PPO updates on one
imagined batch, sharded over its ranks (gloo all-reduce). The first call of each is a warm-up.
Writes benchmarks/results/scaling.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import add_loop_inputs, bar_chart, write_result  # noqa: E402


def config(args) -> dict:
    from mbpo_ray.config import build_config
    from mbpo_ray.mbpo import actor_config

    cfg = build_config(overrides=[f"--mbpo.n_chunks={args.n_chunks}", f"--mbpo.branches={args.branches}",
                                  "--mbpo.tasks=0-1", "--world_model.engine=vllm"])
    return actor_config(cfg, args.policy)[0]


def imagine_rate(args, cfg: dict, workers: int, weights: str) -> tuple[float, object]:
    import ray

    from actors.world_model_pool import WorldModelPool
    from actors.world_model_worker import world_model_worker_class

    cls = world_model_worker_class(num_cpus=1.0)
    pool = WorldModelPool(lambda: cls.remote(cfg, args.world_model, args.policy, args.store, weights),
                          workers, workers, {"CPU": 1.0})
    parts, _ = pool.imagine(args.branches, seed=0, task_ids=[0, 1])  # warm-up
    steps, secs = 0, 0.0
    for k in range(args.calls):
        t0 = time.perf_counter()
        parts, stats = pool.imagine(args.branches, seed=k + 1, task_ids=[0, 1])
        secs += time.perf_counter() - t0
        steps += sum(p.chunk_transitions for p in parts)
        print(f"{workers} worker(s), call {k}: {stats['seconds']:.1f} s", flush=True)
    for w in pool.workers:
        ray.kill(w)
    return steps / secs, parts


def learn_rate(args, cfg: dict, ranks: int, weights: str, batch) -> float:

    from learners.policy_learner import LearnerGroup

    group = LearnerGroup(cfg, args.policy, weights, ranks, num_cpus=1.0)
    group.update(batch, 1, seed=0)  # warm-up
    trained, secs = 0, 0.0
    for k in range(args.calls):
        t0 = time.perf_counter()
        m = group.update(batch, k + 2, seed=k + 1)
        secs += time.perf_counter() - t0
        trained += m["trained"]
        print(f"{ranks} learner(s), update {k}: {m['seconds']:.1f} s", flush=True)
    group.close()
    return trained / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_loop_inputs(ap)
    ap.add_argument("--branches", type=int, default=64)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--n-chunks", type=int, default=2)
    args = ap.parse_args()
    args.store = os.path.expanduser(args.store)
    from mbpo_ray.connect import connect_ray
    from mbpo_ray.rl.imagine import Branches

    connect_ray(os.cpu_count() or 2)
    cfg = config(args)
    root = Path(tempfile.mkdtemp(prefix="scaling-"))
    try:
        imagine, learn = {}, {}
        for n in (1, 2):
            imagine[str(n)], parts = imagine_rate(args, cfg, n, str(root / f"weights-w{n}"))
        batch = Branches.concat([p.branches for p in parts])
        for n in (1, 2):
            learn[str(n)] = learn_rate(args, cfg, n, str(root / f"weights-l{n}"), batch)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mc = cfg["mbpo"]
    result = {"wm_workers": {k: round(v, 2) for k, v in imagine.items()},
              "learners": {k: round(v, 1) for k, v in learn.items()},
              "wm_workers_speedup": round(imagine["2"] / imagine["1"], 2),
              "learners_speedup": round(learn["2"] / learn["1"], 2),
              "units": {"wm_workers": "imagined chunk-transitions/s (both views + reward)",
                        "learners": "PPO samples/s (minibatch rows x updates / wall time of an update)"},
              "setup": {"branches": args.branches, "n_chunks": args.n_chunks, "calls": args.calls,
                        "cpus_per_replica": 1, "updates_per_batch": mc["updates_per_batch"],
                        "minibatch_size": mc["minibatch_size"], "engine": "vllm",
                        "batch_transitions": int(batch.steps)}}
    write_result("scaling", result)
    bar_chart("scaling", ["imagine, 1 worker", "imagine, 2 workers", "learn, 1 rank", "learn, 2 ranks"],
              [imagine["1"], imagine["2"], learn["1"], learn["2"]], ylabel="per second",
              title="Scaling on a local Ray cluster, 1 CPU per replica/rank "
                    "(chunk-transitions/s; PPO samples/s)")


if __name__ == "__main__":
    main()
