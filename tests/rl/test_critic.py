"""A critic that has seen real returns: Monte-Carlo targets from stored episodes, the fit before MBPO,
and real targets mixed into PPO's critic updates without touching the actor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy_learner import PolicyLearner
from mbpo_ray.config import build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.critic import episode_returns, real_returns
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


def critic_config(policy_dir: str, **kw) -> dict:
    cfg = build_config(overrides={"mbpo": {"critic_lr": 3e-3, "minibatch_size": 8, "critic_fit_steps": 40,
                                           "critic_real_coef": 1.0, "updates_per_batch": 2, **kw}})
    return actor_config(cfg, policy_dir)[0]


def test_the_critic_fits_real_returns_and_the_actor_stays(loop_inputs, mixed_store, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(critic_config(policy_dir, kl_coef=0.1), policy_dir, str(tmp_path / "w"), 0, 1,
                            store_uri=mixed_store)
    actor = {n: p.detach().clone() for n, p in learner.policy.named_parameters() if not n.startswith("value_head.")}
    m = learner.fit_critic(40, 1, seed=0)
    assert m["critic_fit/loss_last"] < 0.5 * m["critic_fit/loss_first"] and m["samples"] == 12
    assert all(torch.equal(actor[n], p) for n, p in learner.policy.named_parameters() if n in actor)
    # PPO with real targets mixed in: the update runs, the critic's real error stays low
    out = learner.update(branches(policy_dir, {1: 0}), 2, seed=0)
    assert out["updates"] == 2 and np.isfinite(out["value_loss"]) and out["kl_ref"] >= 0
