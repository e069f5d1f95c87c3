"""The counterfactual action sets of the world-model report change exactly what they claim to."""

from __future__ import annotations

import numpy as np
import torch

from mbpo_ray.policy import ActionBins, build_policy
from mbpo_ray.world_model.counterfactual import other_time_step, padded_nonfinal, policy_tails, reward_stats
from mbpo_ray.world_model.data import Episodes
from tests.policy.conftest import tiny_policy_config

H = 4


def episodes() -> Episodes:
    rng = np.random.default_rng(0)
    rows = 8  # two episodes of 3 chunks + their terminal rows
    last = np.array([0, 0, 0, 1, 0, 0, 0, 1], bool)
    return Episodes(ids=["a", "b"], instruction=["pick up the bowl", "open the drawer"],
                    row_episode=np.repeat([0, 1], 4), head=rng.integers(0, 255, (rows, 32, 32, 3), dtype=np.uint8),
                    wrist=rng.integers(0, 255, (rows, 32, 32, 3), dtype=np.uint8),
                    actions=rng.uniform(-1, 1, (rows, H, 7)).astype(np.float32), num_actions=np.where(last, 0, H),
                    success=np.array([0, 0, 1, 1, 0, 0, 0, 0], bool), is_last=last)


def test_padding_touches_only_chunks_that_did_not_succeed():
    ep = episodes()
    rows = ep.transitions()
    out = padded_nonfinal(ep, rows, np.random.default_rng(0))
    for k, a in zip(rows, out, strict=True):
        if ep.success[k]:
            np.testing.assert_array_equal(a, ep.actions[k])
        else:  # a cut, then the last kept action repeated to the chunk's end
            cut = int(np.flatnonzero((a != ep.actions[k]).any(1))[0])
            assert (a[cut:] == a[cut - 1]).all() and (a[:cut] == ep.actions[k][:cut]).all()


def test_policy_tails_replace_the_second_half_and_other_steps_come_from_the_episode():
    ep = episodes()
    rows = ep.transitions()
    torch.manual_seed(0)
    policy = build_policy(tiny_policy_config(), ActionBins.fit(np.random.default_rng(0).uniform(-1, 1, (99, 7)), H))
    for k, a in zip(rows, policy_tails(policy.eval(), ep, rows, 0), strict=True):
        np.testing.assert_array_equal(a[: H // 2], ep.actions[k][: H // 2])
        assert not np.allclose(a[H // 2 :], ep.actions[k][H // 2 :])
    for k, a in zip(rows, other_time_step(ep, rows, np.random.default_rng(0)), strict=True):
        match = [j for j in rows if np.array_equal(ep.actions[j], a)]
        assert match and match[0] != k and ep.row_episode[match[0]] == ep.row_episode[k]


def test_reward_stats():
    s = reward_stats(np.array([0.9, 0.2, 0.7, 0.1]), np.array([True, False, False, False]))
    assert s["accuracy"] == 0.75 and abs(s["f1"] - 2 / 3) < 1e-9 and s["predicted_yes"] == 2
