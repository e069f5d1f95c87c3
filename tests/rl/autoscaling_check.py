"""Run by tests/rl/test_autoscaling.py inside its own PID, mount and network namespaces (Ray's
AutoscalingCluster runs `ray stop --force`, which would otherwise stop every Ray instance on the
machine): a local autoscaling cluster with fake worker nodes of one type (a GPU-like custom resource,
min 0, max 2), and the world-model pool on it. Prints one JSON line with what it saw.

    python -m tests.rl.autoscaling_check CFG_JSON WORLD_MODEL POLICY STORE WEIGHTS
"""

from __future__ import annotations

import json
import sys
import time


def worker_nodes(ray) -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and "wm_gpu" in n["Resources"])


def wait_for(ray, n: int, seconds: float) -> float:
    t0 = time.monotonic()
    while worker_nodes(ray) != n:
        if time.monotonic() - t0 > seconds:
            raise TimeoutError(f"{worker_nodes(ray)} worker nodes after {seconds:g} s, wanted {n}")
        time.sleep(1)
    return time.monotonic() - t0


def main() -> None:
    import ray
    from ray.cluster_utils import AutoscalingCluster

    cfg, world_model, policy, store, weights = json.loads(sys.argv[1]), *sys.argv[2:6]
    cluster = AutoscalingCluster(
        head_resources={"CPU": 1},
        worker_node_types={"wm_node": {"resources": {"CPU": 1, "wm_gpu": 1}, "node_config": {},
                                       "min_workers": 0, "max_workers": 2}},
        idle_timeout_minutes=0.1)
    cluster.start()
    from actors.world_model_pool import PoolError, WorldModelPool
    from actors.world_model_worker import world_model_worker_class

    out: dict = {}
    try:
        ray.init("auto", log_to_driver=False)
        out["start_nodes"] = worker_nodes(ray)
        cls = world_model_worker_class(num_cpus=0.5, resources={"wm_gpu": 1})
        bundle = {"CPU": 0.5, "wm_gpu": 1}
        pool = WorldModelPool(lambda: cls.remote(cfg, world_model, policy, store, weights), 1, 2, bundle,
                              ready_timeout_s=300)
        out["nodes_one_replica"] = worker_nodes(ray)
        out["grown_to"] = pool.autoscale(imagine_s=10.0, update_s=1.0)  # the learner waited: grow
        out["nodes_two_replicas"] = worker_nodes(ray)
        parts, _ = pool.imagine(4, seed=0, task_ids=[0])
        out["branches"] = sum(len(p.branches) for p in parts)
        out["nodes_that_imagined"] = len({p.node for p in parts})
        out["shrunk_to"] = pool.autoscale(imagine_s=0.1, update_s=10.0)  # one replica fewer keeps up
        out["seconds_to_remove_idle_node"] = wait_for(ray, 1, 180)
        pool.close()
        # a replica that needs what no node type has: a clear error, not a wait for ever
        t0 = time.monotonic()
        try:
            WorldModelPool(lambda: world_model_worker_class(num_cpus=0.5, resources={"tpu_pod": 1}).remote(
                cfg, world_model, policy, store, weights), 1, 1, {"CPU": 0.5, "tpu_pod": 1}, ready_timeout_s=20,
                max_failures=0)
            out["impossible"] = "started"
        except PoolError as exc:
            out["impossible"] = str(exc)
        out["impossible_seconds"] = time.monotonic() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
