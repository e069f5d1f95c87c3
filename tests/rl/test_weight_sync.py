"""mbpo.weight_sync=broadcast: the learner's rank 0 pushes each new policy version into the replicas
over a process group of their own (gloo here); the replicas then hold exactly the published weights
without reading the weight store, a dead replica fails one push (not the run), and the next push
makes the group again; the world-model learner pushes its versions into the replicas' running
engines the same way."""

from __future__ import annotations

import ray
import torch

from actors.world_model_worker import world_model_worker_class
from learners.policy_learner import LearnerGroup
from learners.weight_channel import BUCKET_BYTES, WeightBroadcast, _buckets
from learners.world_model_learner import make_world_model_learner
from mbpo_ray.config import build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.protocol import Versions
from mbpo_ray.rl.synthetic import acted_branches
from mbpo_ray.weights import WeightStore


def held(worker) -> dict[str, torch.Tensor]:
    return ray.get(worker.__ray_call__.remote(lambda self: self.policy.state_dict()))


def test_buckets_keep_one_dtype_and_a_size_limit():
    big = [BUCKET_BYTES // 4]  # float32 elements filling one bucket
    meta = [("a", [4], "float32"), ("b", big, "float32"), ("c", [2], "bfloat16"), ("d", [3], "bfloat16")]
    assert _buckets(meta) == [["a"], ["b"], ["c", "d"]]


def test_broadcast_puts_the_published_version_into_every_replica(ray_cluster, loop_inputs, tmp_path):
    _, store, policy_dir, wm = loop_inputs
    cfg = actor_config(build_config(overrides=["--mbpo.weight_sync=broadcast", "--world_model.engine=hf",
                                               "--mbpo.branches=4", "--mbpo.minibatch_size=4", "--mbpo.actor_lr=1e-2"]),
                       policy_dir)[0]
    weights = str(tmp_path / "weights")
    group = LearnerGroup(cfg, policy_dir, weights, 2, num_cpus=0.25)
    cls = world_model_worker_class(num_cpus=0.25)
    workers = [cls.remote(cfg, wm, policy_dir, store, weights) for _ in range(2)]
    push = WeightBroadcast(group.ranks, "policy", timeout_s=30)
    try:
        for version in (1, 2):
            group.update(acted_branches(policy_dir, {1: 0}, b=4, seed=version), version, seed=version)
            m = push.push(workers, version)
            assert m["sync/policy/broadcast_failures"] == 0 and m["sync/policy/broadcast_s"] > 0
            published, _ = WeightStore(weights).load("policy", version)
            for w in workers:
                got = held(w)
                assert all(torch.equal(got[k], published[k]) for k in published)
                # the replica holds the version already: asking for it reads nothing from the store
                assert ray.get(w.sync.remote(Versions(version, 0))).policy == version
                assert ray.get(w.__ray_call__.remote(lambda self: self.sync_seconds)) < 0.05
        assert push.epoch == 1  # same replicas: the group was made once
        # a replica dies: that push fails (the replicas fall back to the store), the run goes on
        ray.kill(workers[1])
        group.update(acted_branches(policy_dir, {1: 0}, b=4, seed=3), 3, seed=3)
        assert push.push(workers, 3)["sync/policy/broadcast_failures"] == 1
        workers[1] = cls.remote(cfg, wm, policy_dir, store, weights)
        group.update(acted_branches(policy_dir, {1: 0}, b=4, seed=4), 4, seed=4)
        assert push.push(workers, 4)["sync/policy/broadcast_failures"] == 1 and push.epoch == 2  # made again
        published, _ = WeightStore(weights).load("policy", 4)
        assert all(torch.equal(held(w)[k], published[k]) for w in workers for k in published)
        # the world-model learner's finetuned version goes into the replicas' running engines the same way
        wm_learner = make_world_model_learner(wm, store, weights, 0.25)
        ray.get(wm_learner.finetune.remote(2, 1, None, 0))
        m = WeightBroadcast([wm_learner], "world_model", timeout_s=30).push(workers, 1)
        assert m["sync/world_model/broadcast_failures"] == 0
        published, _ = WeightStore(weights).load("world_model", 1)
        for w in workers:
            engine = ray.get(w.__ray_call__.remote(lambda self: (self.wm.engine.version,
                                                                  self.wm.engine.model.state_dict())))
            assert engine[0] == 1 and all(torch.equal(engine[1][k], published[k]) for k in published)
        ray.kill(wm_learner)
    finally:
        group.close()
        for w in workers:
            ray.kill(w)
