"""World-model worker pool on a real local Ray cluster: growth and shrinkage from demand, a replica that
joins late comes up on the newest weights, and a replica killed mid-call loses no branch."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from actors.world_model_pool import PoolError, WorldModelPool, _shares
from actors.world_model_worker import world_model_worker_class
from mbpo_ray.config import build_config
from mbpo_ray.policy import save_policy
from mbpo_ray.protocol import ImagineRequest
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.weights import WeightStore
from tests.conftest import alive_actors, random_obs
from tests.rl.conftest import INSTRUCTIONS, H, tiny_policy


@pytest.fixture(scope="module")
def pool_inputs(tmp_path_factory, tiny_world_model):
    root = tmp_path_factory.mktemp("pool")
    spec = StoreSpec(image_size=32, chunk_size=H)
    store = ReplayStore.create(str(root / "store"), spec)
    rng = np.random.default_rng(0)
    for task in (0, 1):
        b = EpisodeBuilder(spec, suite="libero_spatial", task_id=task, instruction=INSTRUCTIONS[task], source="demo")
        for c in range(4):
            b.add_chunk(random_obs(rng, spec), rng.uniform(-0.3, 0.3, (H, 7)).astype(np.float32), 0.0, False, c == 3,
                        rng.standard_normal(5))
        store.append(b.finish(random_obs(rng, spec)))
    policy = tiny_policy()
    save_policy(policy, root / "policy", {"store_image_size": 32})
    cls = world_model_worker_class(num_cpus=0.25)

    def make(engine: str = "hf", world_model: str = tiny_world_model):
        cfg = build_config(overrides=[f"--world_model.engine={engine}", "--mbpo.n_chunks=2"]).to_dict()
        return lambda: cls.remote(cfg, world_model, str(root / "policy"), str(root / "store"), str(root / "w"))

    return make, root


def test_shares():
    assert _shares(10, 3) == [4, 3, 3] and sum(_shares(7, 7)) == 7 and _shares(1, 2) == [1, 0]


def test_scaling_late_joiner_and_killed_replica(ray_cluster, pool_inputs):
    make, root = pool_inputs
    pool = WorldModelPool(make(), 1, 2, {"CPU": 0.25})
    # a new policy version is published; the replica the pool adds comes up on it by itself
    WeightStore(str(root / "w")).publish("policy", tiny_policy(seed=5).state_dict(), 1)
    assert pool.autoscale(imagine_s=10.0, update_s=1.0) == 2 and len(pool) == 2  # the learner waited: grow
    assert ray.get(pool.workers[1].sync.remote()).policy == 1
    assert pool.autoscale(imagine_s=10.0, update_s=1.0) == 2  # already at max

    # the same seed gives the same branches; a replica killed mid-call has its share redone
    clean, _ = pool.imagine(6, seed=2, task_ids=[0, 1])
    a = Branches.concat([r.branches for r in clean])
    assert len(a) == 6 and a.policy_version == 1 and {s.split(":")[1] for s in a.start_ids} <= {"0", "1", "2", "3"}
    victim = pool.workers[0]
    busy = victim.imagine.remote(ImagineRequest(50, 9))
    ray.kill(victim)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(busy)
    again, stats = pool.imagine(6, seed=2, task_ids=[0, 1])
    assert stats["redone_shares"] == 1 and pool.replaced == 1
    b = Branches.concat([r.branches for r in again])
    assert a.start_ids == b.start_ids and len(b) == 6  # every branch exactly once
    np.testing.assert_array_equal(a.actions, b.actions)
    assert pool.autoscale(imagine_s=1.0, update_s=10.0) == 1 and len(pool) == 1  # one fewer keeps up: shrink


def _wait_dead(actor, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor still answers {timeout_s:g} s after ray.kill")


def _alive_workers() -> int:
    return len(alive_actors({"WorldModelWorker"}))


def test_a_vllm_replica_killed_during_the_call_loses_no_branch(ray_cluster, pool_inputs):
    """The kill lands while the pool waits on the call (vLLM engine); a dead replica found when the
    pool resizes is replaced, not a crash."""
    import os
    import threading
    import time
    from pathlib import Path

    make, _ = pool_inputs
    pool = WorldModelPool(make("vllm"), 1, 2, {"CPU": 0.25})
    try:
        victim = pool.workers[0]
        pid = ray.get(victim.pid.remote())

        def cpu_s() -> float:  # the replica's CPU time: it rises only while it works on a call
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        t0 = cpu_s()
        clean, _ = pool.imagine(128, seed=4, task_ids=[0, 1])
        busy = (cpu_s() - t0) / 3  # a third of a call's work
        landed = []

        def kill_mid_call():
            start, deadline = cpu_s(), time.time() + 300
            while cpu_s() - start < busy:
                if time.time() > deadline:
                    return
                time.sleep(0.01)
            ray.kill(victim)
            landed.append(True)

        killer = threading.Thread(target=kill_mid_call)
        killer.start()
        again, stats = pool.imagine(128, seed=4, task_ids=[0, 1])
        killer.join()
        assert landed and stats["redone_shares"] == 1 and pool.replaced == 1
        a, b = (Branches.concat([r.branches for r in x]) for x in (clean, again))
        assert a.start_ids == b.start_ids and len(b) == 128  # every branch exactly once, the same ones
        np.testing.assert_array_equal(a.actions, b.actions)
        ray.kill(pool.workers[0])
        _wait_dead(pool.workers[0])  # the kill is asynchronous: a call just after it may still be answered
        assert pool.autoscale(imagine_s=10.0, update_s=1.0) == 2 and pool.replaced == 2
        assert all(ray.get([w.pid.remote() for w in pool.workers]))
    finally:
        pool.close()


def test_a_replica_that_cannot_start_stops_the_pool_with_a_clear_error(ray_cluster, pool_inputs, tmp_path):
    make, _ = pool_inputs
    before = _alive_workers()
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(PoolError, match="replica 0 failed to start 3 times in a row"):
        WorldModelPool(make(world_model=str(tmp_path / "not_a_model")), 1, 1, {"CPU": 0.25}, max_failures=2)
    assert _alive_workers() == before  # nothing left running


def test_a_call_that_never_finishes_stops_the_pool(ray_cluster, pool_inputs):
    make, _ = pool_inputs
    pool = WorldModelPool(make(), 1, 1, {"CPU": 0.25}, call_timeout_s=0.05, max_failures=1)
    try:
        with pytest.raises(PoolError, match="no world-model share finished within 0.05 s, 2 times in a row"):
            pool.imagine(64, seed=0, task_ids=[0, 1])
        assert pool.replaced >= 1
    finally:
        pool.close()
