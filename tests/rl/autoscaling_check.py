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


def cluster_class():
    """Ray's AutoscalingCluster, with its base config written here: the PyPI wheel of Ray 2.60 leaves
    out the example file it reads (autoscaler/_private/fake_multi_node/example.yaml)."""
    from ray.cluster_utils import AutoscalingCluster

    class Cluster(AutoscalingCluster):
        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            config = {
                "cluster_name": "fake_multinode", "max_workers": 8, "head_node_type": "ray.head.default",
                "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                             "disable_launch_config_check": True},
                "available_node_types": {**worker_node_types, "ray.head.default": {
                    "resources": head_resources, "node_config": {}, "max_workers": 0}},
                "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "docker": {},
                "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
                "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
                "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
                "worker_start_ray_commands": []}
            config.update(config_kwargs)
            return config

    return Cluster


def main() -> None:
    import ray

    cfg, world_model, policy, store, weights = json.loads(sys.argv[1]), *sys.argv[2:6]
    cluster = cluster_class()(
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
        out["nodes_that_imagined"] = len({p.pid for p in parts})  # both replicas worked
        # fake nodes share one address: tell them apart by node id
        out["replica_nodes"] = len(set(ray.get([w.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()) for w in pool.workers])))
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
