"""The objectives registry (ppo, grpo), the null control, the KL anchor, early stopping on KL, and
group-relative updates over two DDP ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy_learner import LearnerGroup, PolicyLearner, _split
from mbpo_ray.config import ConfigError, build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.policy import load_policy
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.rl.objectives import branch_returns, grpo_targets, ppo_targets
from tests.rl.test_bc import branches, log_likelihood

ONE_RANK = lambda x: x  # noqa: E731


def grouped(policy_dir: str, successes: dict[int, int], b: int = 8, group: int = 4, seed: int = 0) -> Branches:
    br = branches(policy_dir, successes, b=b, seed=seed)
    br.group = np.repeat(np.arange(b // group), group)
    return br


def mbpo(**kw):
    return build_config(overrides={"mbpo": {"objective": "grpo", "group_size": 4, "branches": 8, **kw}}).mbpo


def test_branch_returns_discount_the_first_success():
    br = branches_stub(terminal=[[False, False], [True, False], [False, True]], valid=[[1, 1], [1, 0], [1, 1]])
    np.testing.assert_allclose(branch_returns(br, 0.9), [0.0, 1.0, 0.9])


def test_soft_returns_grade_branches_that_all_fail():
    br = branches_stub(terminal=[[False, False], [False, False], [True, False]], valid=[[1, 1], [1, 1], [1, 0]])
    br.p_yes = np.array([[0.1, 0.2], [0.3, 0.4], [0.8, 0.9]], np.float32)  # step 1 of branch 2 not taken
    soft = branch_returns(br, 0.5, "soft")
    np.testing.assert_allclose(soft, [0.1 + 0.5 * 0.9 * 0.2, 0.3 + 0.5 * 0.7 * 0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(branch_returns(br, 0.5), [0.0, 0.0, 1.0])
    br.group = np.zeros(3, np.int64)
    tg = grpo_targets(br, mbpo(gamma=0.5, reward_mode="soft", group_size=3, branches=3, learners=1), ONE_RANK)
    np.testing.assert_allclose(tg.advantages.numpy(), np.repeat(soft - soft.mean(), [2, 2, 1]), rtol=1e-5)
    with pytest.raises(ConfigError, match="mbpo.reward_mode=soft is read by the group-relative objective only"):
        build_config(overrides={"mbpo": {"objective": "ppo", "reward_mode": "soft"}})


def branches_stub(terminal, valid) -> Branches:
    terminal, valid = np.asarray(terminal, bool), np.asarray(valid, bool)
    b, n = terminal.shape
    z = np.zeros((b, n), np.float32)
    img = np.zeros((b, n, 4, 4, 3), np.uint8)
    return Branches(head=img, wrist=img, instruction=["x"] * b, actions=np.zeros((b, n, 2, 7), np.float32),
                    token_log_prob=np.zeros((b, n, 2, 7), np.float32), value=z, reward=terminal.astype(np.float32),
                    p_yes=z, terminal=terminal, valid=valid, last_value=np.zeros(b, np.float32), final_head=img[:, 0],
                    final_wrist=img[:, 0])


def test_grpo_advantages_are_relative_to_the_group_and_agreeing_groups_drop(loop_inputs):
    _, _, policy_dir, _ = loop_inputs
    # group 0: branch 1 succeeds at step 0, branch 2 at step 1; group 1: no success anywhere
    br = grouped(policy_dir, {1: 0, 2: 1})
    tg = grpo_targets(br, mbpo(gamma=0.5), ONE_RANK)
    ret = np.array([0, 1, 0.5, 0])
    expected = ret - ret.mean()
    assert tg.returns is None and tg.stats["groups"] == 2 and tg.stats["informative_groups"] == 1
    assert not tg.mask[4:].any()  # the group whose branches all agree teaches nothing
    np.testing.assert_array_equal(tg.mask[:4], br.valid[:4])
    per_step = np.broadcast_to(expected[:, None], (4, 2))[br.valid[:4]]
    np.testing.assert_allclose(tg.advantages.numpy(), per_step, rtol=1e-6)  # not scaled by the group's spread


def test_null_control_shuffles_returns_across_branches(loop_inputs):
    _, _, policy_dir, _ = loop_inputs
    br = grouped(policy_dir, {0: 0}, b=16)
    real = grpo_targets(br, mbpo(branches=16), ONE_RANK)
    nulls = [grpo_targets(br, mbpo(branches=16, null_control=True), ONE_RANK, seed=s) for s in range(8)]
    assert real.mask[:4].any() and not real.mask[4:].any()
    # the one success lands on a random branch: which group learns from it no longer follows the actions
    moved = {int(np.flatnonzero(t.mask.any(1))[0]) // 4 for t in nulls if t.mask.any()}
    assert len(moved) > 1


def test_ppo_advantage_scaling(loop_inputs):
    _, _, policy_dir, _ = loop_inputs
    br = branches(policy_dir, {1: 0})
    br.value[:] = np.random.default_rng(0).normal(0, 0.01, br.value.shape)  # critic noise, one real success
    cfg = lambda norm: build_config(overrides={"mbpo": {"adv_norm": norm}}).mbpo  # noqa: E731
    raw = ppo_targets(br, cfg("none"), ONE_RANK).advantages
    centred = ppo_targets(br, cfg("mean"), ONE_RANK).advantages
    scaled = ppo_targets(br, cfg("std"), ONE_RANK).advantages
    np.testing.assert_allclose(centred.numpy(), (raw - raw.mean()).numpy(), atol=1e-6)
    assert float(scaled.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    # without the success, std scaling makes the critic's noise as large as a real signal; mean does not
    quiet = branches(policy_dir, {})
    quiet.value[:] = br.value
    assert float(ppo_targets(quiet, cfg("std"), ONE_RANK).advantages.abs().max()) > 1.0
    assert float(ppo_targets(quiet, cfg("mean"), ONE_RANK).advantages.abs().max()) < 0.05


def grpo_config(policy_dir: str, **kw) -> dict:
    cfg = build_config(overrides={"mbpo": {"objective": "grpo", "group_size": 4, "branches": 8, "actor_lr": 1e-3,
                                           "minibatch_size": 16, "updates_per_batch": 3, **kw}})
    return actor_config(cfg, policy_dir)[0]


def test_grpo_raises_the_likelihood_of_the_group_winner(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(grpo_config(policy_dir, kl_coef=0.1), policy_dir, str(tmp_path / "w"), 0, 1)
    br = grouped(policy_dir, {1: 0})
    winner = br.valid & (np.arange(8) == 1)[:, None]
    before = log_likelihood(learner.policy.eval(), br, winner)
    m = learner.update(br, 1, seed=0)
    assert m["informative_groups"] == 1 and m["samples"] == int(br.valid[:4].sum()) and m["updates"] == 3
    assert m["kl_ref"] >= 0 and "clip_fraction" in m
    assert log_likelihood(learner.policy.eval(), br, winner) > before + 0.05
    critic = [p for n, p in learner.policy.named_parameters() if n.startswith("value_head.")]
    assert all(p.grad is None or not p.grad.abs().sum() for p in critic)  # grpo trains no critic


def test_updates_stop_once_the_chunk_kl_passes_the_target(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    br = grouped(policy_dir, {1: 0})
    free = PolicyLearner(grpo_config(policy_dir, actor_lr=1e-2), policy_dir, str(tmp_path / "a"), 0, 1)
    capped = PolicyLearner(grpo_config(policy_dir, actor_lr=1e-2, target_kl=1e-6), policy_dir, str(tmp_path / "b"),
                           0, 1)
    assert free.update(br, 1, seed=0)["updates"] == 3
    assert capped.update(br, 1, seed=0)["updates"] < 3


def test_grpo_two_ranks_match_one(ray_cluster, loop_inputs, tmp_path):
    """Shards hold whole groups; rank 0's group agrees (nothing to learn) and joins with a zero-weighted
    sample: two ranks end where one rank does."""
    _, _, policy_dir, _ = loop_inputs
    br = grouped(policy_dir, {5: 1})
    assert [list(s.group) for s in _split(br, 2)] == [[0] * 4, [1] * 4]
    cfg = grpo_config(policy_dir)
    group = LearnerGroup(cfg, policy_dir, str(tmp_path / "two"), 2, num_cpus=0.25)
    m = group.update(br, 1, seed=0)
    assert m["informative_groups"] == 1
    sums = group.checksums()
    group.close()  # its placement group's reservation back
    assert sums[0] == sums[1]
    one = PolicyLearner(cfg, policy_dir, str(tmp_path / "one"), 0, 1)
    one.update(br, 1, seed=0)
    start = float(sum(p.detach().double().sum() for p in load_policy(policy_dir).parameters()))
    assert abs(sums[0] - start) > 1e-6
    assert one.weights_checksum() == pytest.approx(sums[0], rel=1e-6, abs=1e-5)


def test_a_rank_that_dies_mid_update_stops_the_group_at_once(ray_cluster, loop_inputs, tmp_path):
    """Rank 1 is killed while the group updates: rank 0 would wait in its all-reduce for ever; instead
    the error is raised and rank 0 is killed too."""
    import time

    import ray

    _, _, policy_dir, _ = loop_inputs
    group = LearnerGroup(grpo_config(policy_dir), policy_dir, str(tmp_path / "two"), 2, num_cpus=0.25)
    group.checksums()  # both ranks are up
    refs = group.update_async(grouped(policy_dir, {5: 1}), 1, seed=0)
    ray.kill(group.ranks[1])
    t0 = time.perf_counter()
    with pytest.raises(ray.exceptions.RayActorError):
        group.collect(refs)
    assert time.perf_counter() - t0 < 60
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(group.ranks[0].weights_checksum.remote(), timeout=60)


def test_group_config_errors():
    with pytest.raises(ConfigError, match="group_size >= 2"):
        build_config(overrides={"mbpo": {"objective": "grpo"}})
    with pytest.raises(ConfigError, match="not a multiple of mbpo.group_size=5"):
        build_config(overrides={"mbpo": {"objective": "grpo", "group_size": 5}})
    with pytest.raises(ConfigError, match="mbpo.adv_norm"):
        build_config(overrides={"mbpo": {"adv_norm": "whiten"}})


def test_concat_keeps_group_ids_apart():
    a = branches_stub([[False, False]] * 2, [[1, 1]] * 2)
    a.group = np.array([0, 0])
    both = Branches.concat([a, a])
    assert list(both.group) == [0, 0, 1, 1]


def test_a_batch_with_no_informative_group_changes_nothing(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(grpo_config(policy_dir), policy_dir, str(tmp_path / "w"), 0, 1)
    before = [p.detach().clone() for p in learner.policy.parameters()]
    m = learner.update(grouped(policy_dir, {}), 1, seed=0)
    assert m["samples"] == 0 and m["updates"] == 0 and m["informative_groups"] == 0
    assert all(torch.equal(a, p) for a, p in zip(before, learner.policy.parameters(), strict=True))
