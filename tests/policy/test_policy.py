"""The policy interface: shapes, exact log-probs and entropies, greedy determinism, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbpo_ray.config import ConfigError, PolicyConfig, build_config
from mbpo_ray.policy import POLICIES, ActionBins, Observations, build_policy, load_policy, save_policy
from tests.policy.conftest import TINY_POLICY, tiny_policy_config

H = 4


def batch(n: int, size: int = 32, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations(head=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                        wrist=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                        proprio=rng.standard_normal((n, 8)).astype(np.float32),
                        instruction=[f"pick up bowl {i % 2}" for i in range(n)])


def tiny(n_bins: int = 256, seed: int = 0):
    torch.manual_seed(seed)
    bins = ActionBins.fit(np.random.default_rng(seed).uniform(-1, 1, (400, 7)), H, n_bins)
    return build_policy(PolicyConfig(**{**TINY_POLICY, "n_bins": n_bins}), bins).eval()


def test_act_shapes_and_log_prob_equals_evaluate():
    policy = tiny()
    obs = batch(5)  # 32 px frames, resized to the policy's 16 px inside
    out = policy.act(obs, generator=torch.Generator().manual_seed(1))
    assert out.actions.shape == (5, H, 7) and out.actions.dtype == torch.float32
    assert out.bins.shape == (5, H, 7) and out.bins.dtype == torch.int64
    assert out.log_prob.shape == (5,) and out.value.shape == (5,)
    assert out.bins.min() >= 0 and out.bins.max() < 256
    logp, ent, value = policy.evaluate(obs, out.actions)
    torch.testing.assert_close(logp, out.log_prob, rtol=0, atol=1e-4)
    torch.testing.assert_close(value, out.value)
    assert (ent > 0).all() and logp.requires_grad and value.requires_grad
    assert (logp < 0).all() and (ent <= H * 7 * math.log(256) + 1e-3).all()


def test_entropy_and_log_prob_match_a_hand_computation():
    policy = tiny(n_bins=4)
    with torch.no_grad():
        policy.action_head.weight.zero_()
        policy.action_head.bias.copy_(torch.tensor([0.0, math.log(2.0), 0.0, 0.0]).repeat(H * 7))
    p = np.array([1, 2, 1, 1]) / 5
    obs = batch(2)
    out = policy.act(obs, greedy=True)
    assert (out.bins == 1).all()
    lo, hi = np.array(policy.bins.layout.action_low), np.array(policy.bins.layout.action_high)
    np.testing.assert_allclose(out.actions[0, 0].numpy(), lo + 1.5 / 4 * (hi - lo), rtol=1e-5)
    np.testing.assert_allclose(out.log_prob.numpy(), [H * 7 * math.log(p[1])] * 2, rtol=1e-5)
    _, ent, _ = policy.evaluate(obs, out.actions)
    np.testing.assert_allclose(ent.detach().numpy(), [H * 7 * -(p * np.log(p)).sum()] * 2, rtol=1e-5)
    # a mask over steps counts only the valid steps of a cut-short chunk
    mask = torch.tensor([[True, True, False, False]] * 2)
    logp, ent_m, _ = policy.evaluate(obs, out.actions, mask)
    np.testing.assert_allclose(logp.detach().numpy(), [2 * 7 * math.log(p[1])] * 2, rtol=1e-5)
    np.testing.assert_allclose(ent_m.detach().numpy(), ent.detach().numpy() / 2, rtol=1e-5)


def test_temperature_tempers_sampling_and_scoring_alike():
    policy = tiny(n_bins=4)
    with torch.no_grad():
        policy.action_head.weight.zero_()
        policy.action_head.bias.copy_(torch.tensor([0.0, math.log(2.0), 0.0, 0.0]).repeat(H * 7))
    obs = batch(2)
    greedy = policy.act(obs, greedy=True)
    policy.temperature = 2.0  # logits halved: p proportional to (1, sqrt 2, 1, 1)
    p = np.array([1, math.sqrt(2), 1, 1]) / (3 + math.sqrt(2))
    hot = policy.act(obs, greedy=True)
    assert torch.equal(hot.bins, greedy.bins)  # the most likely bin does not move
    np.testing.assert_allclose(hot.log_prob.numpy(), [H * 7 * math.log(p[1])] * 2, rtol=1e-5)
    drawn = policy.act(obs, generator=torch.Generator().manual_seed(3))
    logp, ent, _ = policy.evaluate(obs, drawn.actions)  # the learner scores what the sampler drew from
    torch.testing.assert_close(logp, drawn.log_prob, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ent.detach().numpy(), [H * 7 * -(p * np.log(p)).sum()] * 2, rtol=1e-5)
    policy.temperature = 1.0
    cold = policy.evaluate(obs, drawn.actions)[0]
    assert (cold != logp).all()


def test_greedy_is_deterministic_and_sampling_follows_the_seed():
    policy = tiny()
    obs = batch(3)
    a, b = policy.act(obs, greedy=True), policy.act(obs, greedy=True)
    assert torch.equal(a.bins, b.bins) and torch.equal(a.actions, b.actions)
    s1 = policy.act(obs, generator=torch.Generator().manual_seed(7))
    s2 = policy.act(obs, generator=torch.Generator().manual_seed(7))
    s3 = policy.act(obs, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1.bins, s2.bins) and not torch.equal(s1.bins, s3.bins)
    # greedy takes the most likely bin: its log-prob is at least any sample's
    assert (a.log_prob >= s1.log_prob - 1e-5).all()


def test_bins_round_trip_and_follow_the_world_model_rule():
    bins = ActionBins.fit(np.random.default_rng(0).normal(0, 0.3, (1000, 7)), H)
    every = np.tile(np.arange(256)[:, None], (1, 7))
    assert torch.equal(bins.to_bins(bins.to_actions(every)), torch.from_numpy(every))
    lo = np.percentile(np.random.default_rng(0).normal(0, 0.3, (1000, 7)), 1, axis=0)
    np.testing.assert_allclose(bins.layout.action_low, lo)
    assert bins.to_bins(np.full((1, 7), 5.0)).max() == 255 and bins.to_bins(np.full((1, 7), -5.0)).min() == 0


def test_save_and_load_give_the_same_policy(tmp_path):
    policy = tiny(seed=3)
    policy.set_proprio_stats(np.random.default_rng(0).normal(2, 3, (50, 8)))
    save_policy(policy, tmp_path / "ck", {"demos": {"0": ["a"]}, "store_image_size": 32})
    loaded = load_policy(tmp_path / "ck")
    obs = batch(4)
    torch.testing.assert_close(loaded.logits_and_value(obs)[0], policy.logits_and_value(obs)[0])
    torch.testing.assert_close(loaded.proprio_mean, policy.proprio_mean)
    assert loaded.bins.to_dict() == policy.bins.to_dict() and loaded.cfg == policy.cfg


def test_registry_and_config_errors():
    assert set(POLICIES) >= {"binned_vla"}
    with pytest.raises(ConfigError, match="policy.arch='openvla' is not allowed"):
        build_config(overrides=["--policy.arch=openvla"])
    with pytest.raises(ConfigError, match="policy.vision_depths"):
        build_config(overrides=["--policy.vision_widths=8,16", "--policy.vision_depths=1"])
    with pytest.raises(ConfigError, match="eval.tasks='3-10' is not allowed: libero_spatial has tasks 0-9"):
        build_config(overrides=["--eval.tasks=3-10"])
    assert build_config(overrides=["--eval.suite=libero_90", "--eval.tasks=80-89"]).eval.task_ids[-1] == 89
    assert tiny_policy_config().image_size == 16


def test_proprio_is_read_only_when_configured():
    obs = batch(3)
    moved = Observations(obs.head, obs.wrist, np.asarray(obs.proprio) + 5.0, obs.instruction)
    for proprio in (False, True):
        torch.manual_seed(0)
        bins = ActionBins.fit(np.random.default_rng(0).uniform(-1, 1, (400, 7)), H)
        policy = build_policy(PolicyConfig(**{**TINY_POLICY, "proprio": proprio}), bins).eval()
        same = torch.allclose(policy.logits_and_value(obs)[0], policy.logits_and_value(moved)[0])
        assert same != proprio
