"""Behaviour cloning inside the world model (``mbpo.objective=bc``): the learner imitates only the
imagined chunks of branches the world model judged successful, and two DDP ranks, one of them
without any success in its shard, make the same update as one rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy_learner import LearnerGroup, PolicyLearner
from mbpo_ray.config import ConfigError, build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.policy import load_policy
from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.rl.synthetic import acted_branches as branches
from mbpo_ray.weights import WeightStore


def log_likelihood(policy, br: Branches, rows: np.ndarray) -> float:
    obs = Observations(br.head[rows], br.wrist[rows], np.zeros((int(rows.sum()), 8), np.float32),
                       list(np.array(br.instruction, dtype=object)[np.nonzero(rows)[0]]))
    with torch.no_grad():
        logp, _, _ = policy.evaluate(obs, torch.from_numpy(br.actions[rows]), None)
    return float(logp.mean())


def bc_config(policy_dir: str, **mbpo) -> dict:
    cfg = build_config(overrides={"mbpo": {"objective": "bc", "actor_lr": 1e-3, "minibatch_size": 8,
                                           "updates_per_batch": 3, **mbpo}})
    return actor_config(cfg, policy_dir)[0]


def test_bc_imitates_only_successful_branches(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(bc_config(policy_dir), policy_dir, str(tmp_path / "w"), 0, 1)
    before = [p.detach().clone() for p in learner.policy.parameters()]
    m = learner.update(branches(policy_dir, {}), 1, seed=0)  # no predicted success: nothing to imitate
    assert m["samples"] == 0 and m["trained"] == 0 and m["success_branches"] == 0 and "loss" not in m
    assert all(torch.equal(a, p) for a, p in zip(before, learner.policy.parameters(), strict=True))
    assert WeightStore(str(tmp_path / "w")).latest("policy") == 1  # the version is published all the same

    br = branches(policy_dir, {1: 1, 3: 0})  # branch 1 succeeds at its 2nd step, branch 3 at its 1st
    imitated = br.valid & br.terminal.any(1, keepdims=True)
    ll_before = log_likelihood(learner.policy.eval(), br, imitated)
    m = learner.update(br, 2, seed=0)
    assert m["samples"] == 3 and m["success_branches"] == 2 and m["trained"] == 3 * 3
    assert log_likelihood(learner.policy.eval(), br, imitated) > ll_before + 0.1
    value_head = [p for n, p in learner.policy.named_parameters() if n.startswith("value_head.")]
    assert all(p.grad is None or not p.grad.abs().sum() for p in value_head)  # no critic in BC


def test_bc_ranks_without_successes_join_the_same_update(ray_cluster, loop_inputs, tmp_path):
    """Rank 0's shard holds no success: it contributes a zero-weighted sample to every all-reduce, and the
    two ranks end where one rank does (full minibatches, so sampling plays no part)."""
    _, _, policy_dir, _ = loop_inputs
    br = branches(policy_dir, {2: 1, 3: 1})  # both successes in the second half: rank 1's shard
    cfg = bc_config(policy_dir)
    group = LearnerGroup(cfg, policy_dir, str(tmp_path / "two"), 2, num_cpus=0.25)
    m = group.update(br, 1, seed=0)
    assert m["samples"] == 4 and m["success_branches"] == 2 and m["trained"] == 3 * 4
    sums = group.checksums()
    group.close()  # its placement group's reservation back
    assert sums[0] == sums[1]
    one = PolicyLearner(cfg, policy_dir, str(tmp_path / "one"), 0, 1)
    one.update(br, 1, seed=0)
    start = float(sum(p.detach().double().sum() for p in load_policy(policy_dir).parameters()))
    assert abs(sums[0] - start) > 1e-6  # the update moved the weights
    assert one.weights_checksum() == pytest.approx(sums[0], rel=1e-6, abs=1e-5)


def test_branches_must_cover_every_learner_rank():
    with pytest.raises(ConfigError, match="mbpo.branches=1 hold 1 groups .* fewer than mbpo.learners=2"):
        build_config(overrides={"mbpo": {"branches": 1, "learners": 2}})
    with pytest.raises(ConfigError, match="mbpo.objective"):
        build_config(overrides={"mbpo": {"objective": "dagger"}})
