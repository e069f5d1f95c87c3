"""A critic that has seen real returns: Monte-Carlo targets from stored episodes, the fit before MBPO,
and real targets mixed into PPO's critic updates without touching the actor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy_learner import PolicyLearner
from mbpo_ray.config import build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.policy import load_policy
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.critic import (
    auc,
    episode_returns,
    episode_split,
    fit_value_head,
    fit_value_network,
    fitted_critic_values,
    fitted_value_head,
    network_values,
    real_returns,
    value_features,
)
from tests.conftest import random_episode
from tests.rl.conftest import SPEC
from tests.rl.test_bc import branches


def test_episode_returns():
    np.testing.assert_allclose(episode_returns(3, True, 0.5), [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(episode_returns(3, False, 0.5), [0, 0, 0])


@pytest.fixture()
def mixed_store(tmp_path):
    store = ReplayStore.create(str(tmp_path / "store"), SPEC)
    rng = np.random.default_rng(0)
    for k in range(4):  # two successes (demo), two failures (policy rollouts)
        store.append(random_episode(rng, SPEC, chunks=3, success=k < 2, source="demo" if k < 2 else "real")[0])
    return str(tmp_path / "store")


def test_real_returns_cover_successes_and_failures(mixed_store):
    r = real_returns(mixed_store, 0.9)
    assert len(r) == 12 and sorted(set(r.source)) == ["demo", "real"]
    np.testing.assert_allclose(sorted(r.returns)[-2:], [1.0, 1.0])
    assert (r.returns[np.array(r.source) == "real"] == 0).all()
    with pytest.raises(ValueError, match="no episodes of tasks"):
        real_returns(mixed_store, 0.9, task_ids=[5])
    assert len(set(r.episode)) == 4 and sorted(r.chunk.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_auc():
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.8, 0.9], [True, False, False]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert auc([0.2, 0.9, 0.4, 0.6], [True, True, False, False]) == 0.5
    assert np.isnan(auc([0.3, 0.4], [True, True]))


def test_value_features_are_what_the_value_head_reads(loop_inputs, mixed_store):
    policy = load_policy(loop_inputs[2]).eval()
    r = real_returns(mixed_store, 0.9)
    feats = value_features(policy, r.observations(np.arange(len(r))), batch=5)
    assert feats.shape[0] == len(r) and np.isfinite(feats).all()
    with torch.no_grad():
        v = policy.value_head(torch.from_numpy(feats)).squeeze(-1)
        torch.testing.assert_close(v, policy.act(r.observations(np.arange(len(r))), greedy=True).value)


def test_a_fitted_value_head_ranks_successes_first():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((64, 8)).astype(np.float32)
    returns = (feats[:, 0] > 0).astype(np.float32)  # success shows in one feature
    head = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    losses = fit_value_head(head, feats, returns, steps=300, lr=3e-3, batch=32)
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])
    v = head(torch.from_numpy(feats)).squeeze(-1).detach().numpy()
    assert auc(v, returns > 0) > 0.95
    # early stopping: with validation targets the opposite of the training ones, the weights kept
    # are far closer to them than the fully trained ones
    def val_err(h):
        with torch.no_grad():
            return float((h(torch.from_numpy(feats)).squeeze(-1) - torch.from_numpy(1 - returns)).pow(2).mean())

    torch.manual_seed(0)
    stopped = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    fit_value_head(stopped, feats, returns, steps=300, lr=3e-3, batch=32, val=(feats, 1 - returns), eval_every=50)
    assert val_err(stopped) < 0.7 * val_err(head)


def test_a_value_network_trains_its_own_trunk_and_leaves_the_policy(loop_inputs, mixed_store):
    policy = load_policy(loop_inputs[2]).eval()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    r = real_returns(mixed_store, 0.9)
    obs = r.observations(np.arange(len(r)))
    with torch.no_grad():  # V of the untrained network is what the policy's own value head says
        torch.testing.assert_close(network_values(policy, obs, batch=5), policy.act(obs, greedy=True).value)
    val = episode_split(r, seed=0)
    assert val.sum() == 3 and len(set(np.asarray(r.episode)[val])) == 1  # a fifth of 4 episodes, rounded up to 1
    everything = np.ones(len(r), bool)
    net, losses = fit_value_network(policy, r, everything, everything, steps=60, lr=3e-3, batch=12)
    with torch.no_grad():
        v = network_values(net, obs).numpy()
    assert np.mean((v - r.returns) ** 2) < 0.5 * np.mean(r.returns ** 2) and not net.training
    trunk = [n for n, p in net.named_parameters() if not n.startswith("value_head.") and not torch.equal(p, before[n])]
    assert trunk, "the trunk was not trained"
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())  # a copy was fitted


def test_fitted_critic_values_score_every_view_with_each_critic(loop_inputs, mixed_store):
    policy = load_policy(loop_inputs[2]).eval()
    r = real_returns(mixed_store, 0.9)
    views = [r.observations(np.arange(3)), r.observations(np.arange(3, len(r)))]
    vals = fitted_critic_values(policy, r, views, trunk_steps=5, seed=0)
    assert set(vals) == {"value_head", "whole_policy"}
    assert [len(v) for v in vals["value_head"]] == [len(v) for v in vals["whole_policy"]] == [3, len(r) - 3]
    head = fitted_value_head(policy, r, seed=0)  # the same head fitted_value_head fits with that seed
    with torch.no_grad():
        expected = head(torch.from_numpy(value_features(policy, views[0]))).squeeze(-1).numpy()
    np.testing.assert_allclose(vals["value_head"][0], expected, rtol=1e-5, atol=1e-6)
    assert set(fitted_critic_values(policy, r, views[:1], seed=0)) == {"value_head"}  # no trunk steps, no trunk critic


def critic_config(policy_dir: str, **kw) -> dict:
    cfg = build_config(overrides={"mbpo": {"critic_lr": 3e-3, "minibatch_size": 8, "critic_fit_steps": 40,
                                           "critic_real_coef": 1.0, "updates_per_batch": 2, **kw}})
    return actor_config(cfg, policy_dir)[0]


def test_the_critic_fits_real_returns_and_the_actor_stays(loop_inputs, mixed_store, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(critic_config(policy_dir, kl_coef=0.1, policy_temperature=1.5), policy_dir,
                            str(tmp_path / "w"), 0, 1, store_uri=mixed_store)
    assert learner.policy.temperature == learner.reference.temperature == 1.5  # scores what the workers sampled
    actor = {n: p.detach().clone() for n, p in learner.policy.named_parameters() if not n.startswith("value_head.")}
    m = learner.fit_critic(40, 1, seed=0)
    assert m["critic_fit/loss_last"] < 0.5 * m["critic_fit/loss_first"] and m["samples"] == 12
    assert all(torch.equal(actor[n], p) for n, p in learner.policy.named_parameters() if n in actor)
    # PPO with real targets mixed in: the update runs, the critic's real error stays low
    out = learner.update(branches(policy_dir, {1: 0}), 2, seed=0)
    assert out["updates"] == 2 and np.isfinite(out["value_loss"]) and out["kl_ref"] >= 0
