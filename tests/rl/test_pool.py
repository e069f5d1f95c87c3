"""World-model worker pool on a real local Ray cluster: growth and shrinkage from demand, a replica that
joins late comes up on the newest weights, and a replica killed mid-call loses no branch."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from actors.world_model_pool import WorldModelPool, _shares
from actors.world_model_worker import world_model_worker_class
from mbpo_ray.config import build_config
from mbpo_ray.policy import save_policy
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.weights import WeightStore
from tests.conftest import random_obs
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
    cfg = build_config(overrides=["--world_model.engine=hf", "--mbpo.n_chunks=2"]).to_dict()
    cls = world_model_worker_class(num_cpus=0.25)
    return lambda: cls.remote(cfg, tiny_world_model, str(root / "policy"), str(root / "store"), str(root / "w")), root


def test_shares():
    assert _shares(10, 3) == [4, 3, 3] and sum(_shares(7, 7)) == 7 and _shares(1, 2) == [1, 0]


def test_scaling_late_joiner_and_killed_replica(ray_cluster, pool_inputs):
    make, root = pool_inputs
    pool = WorldModelPool(make, 1, 2, {"CPU": 0.25})
    # a new policy version is published; the replica the pool adds comes up on it by itself
    WeightStore(str(root / "w")).publish("policy", tiny_policy(seed=5).state_dict(), 1)
    assert pool.autoscale(imagine_s=10.0, update_s=1.0) == 2 and len(pool) == 2  # the learner waited: grow
    assert ray.get(pool.workers[1].sync.remote())["policy_version"] == 1
    assert pool.autoscale(imagine_s=10.0, update_s=1.0) == 2  # already at max

    # the same seed gives the same branches; a replica killed mid-call has its share redone
    clean, _ = pool.imagine(6, seed=2, task_ids=[0, 1])
    a = Branches.concat([r["branches"] for r in clean])
    assert len(a) == 6 and a.policy_version == 1 and {s.split(":")[1] for s in a.start_ids} <= {"0", "1", "2", "3"}
    victim = pool.workers[0]
    busy = victim.imagine.remote(50, 9, None)
    ray.kill(victim)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(busy)
    again, stats = pool.imagine(6, seed=2, task_ids=[0, 1])
    assert stats["redone_shares"] == 1 and pool.replaced == 1
    b = Branches.concat([r["branches"] for r in again])
    assert a.start_ids == b.start_ids and len(b) == 6  # every branch exactly once
    np.testing.assert_array_equal(a.actions, b.actions)
    assert pool.autoscale(imagine_s=1.0, update_s=10.0) == 1 and len(pool) == 1  # one fewer keeps up: shrink
