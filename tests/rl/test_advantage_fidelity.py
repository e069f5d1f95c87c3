"""Judging a world model by how it orders the branches of one start state (mbpo_ray.rl.advantage_fidelity)."""

from __future__ import annotations

import numpy as np

from mbpo_ray.rl.advantage_fidelity import (
    bootstrapped_returns,
    fidelity,
    hard_returns,
    noise_share,
    open_loop,
    soft_returns,
)
from mbpo_ray.rl.imagine import imagine
from mbpo_ray.world_model.evaluate import WorldModel
from tests.rl.conftest import INSTRUCTIONS, tiny_policy


def test_returns_against_hand_values():
    p = np.array([[0.2, 0.9], [0.6, 0.1], [0.1, 0.3]])
    np.testing.assert_allclose(hard_returns(p, 0.9), [0.9, 1.0, 0.0])
    # soft: p0 + gamma (1 - p0) p1
    np.testing.assert_allclose(soft_returns(p, 0.9), [0.2 + 0.9 * 0.8 * 0.9, 0.6 + 0.9 * 0.4 * 0.1, 0.1 + 0.9 * 0.9 * 0.3])
    success = np.array([[False, True], [True, True], [False, False]])
    np.testing.assert_allclose(hard_returns(success.astype(float), 0.9), [0.9, 1.0, 0.0])
    # bootstrapped: a branch without a success is worth gamma^n V(last observation)
    v = np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(bootstrapped_returns(p, v, 0.9), [0.9, 1.0, 0.81 * 0.5])
    np.testing.assert_allclose(bootstrapped_returns(p, v, 0.9, soft=True),
                               soft_returns(p, 0.9) + 0.81 * np.array([0.8 * 0.1, 0.4 * 0.9, 0.9 * 0.7]) * 0.5)


def test_fidelity_is_one_for_the_truth_chance_for_a_constant_and_zero_for_the_reverse():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(20), 8)
    real = (rng.random(160) < 0.4).astype(float)
    same = fidelity(real * 0.7 + 0.1, real, group, boot=200)
    assert same["pair_accuracy"] == 1.0 and same["advantage_cosine"] > 0.999
    assert same["groups_real_spread"] == same["groups_imagined_spread"] > 10
    flat = fidelity(np.full(160, 0.3), real, group, boot=200)
    assert flat["pair_accuracy"] == 0.5 and flat["advantage_cosine"] == 0.0 and flat["groups_imagined_spread"] == 0
    rev = fidelity(1 - real, real, group, boot=200)
    assert rev["pair_accuracy"] == 0.0 and rev["advantage_cosine"] < -0.999
    # unrelated scores: the interval holds chance
    noise = fidelity(rng.random(160), real, group, boot=500)
    lo, hi = noise["pair_accuracy_ci95"]
    assert lo < 0.5 < hi and noise["pairs"] == same["pairs"]


def test_noise_share_separates_the_model_s_sampling_from_the_actions():
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(30), 8)
    by_action = rng.random(240)
    assert noise_share(np.stack([by_action] * 4), group) == 0.0
    assert noise_share(rng.random((4, 240)), group) > 0.8


def test_open_loop_repeats_the_branches_answers(tiny_world_model):
    """Imagined again open loop with the same seed, a branch's actions get the answers imagination gave."""
    wm = WorldModel(tiny_world_model, engine="hf")
    rng = np.random.default_rng(2)
    head, wrist = (rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    instr = [INSTRUCTIONS[i % 2] for i in range(6)]
    br = imagine(wm, tiny_policy(), head, wrist, instr, n_chunks=3, temperature=1.0, seed=9, stop_at_success=False)
    assert br.valid.all()  # every step taken, whatever the answers
    again = open_loop(wm, head, wrist, instr, br.actions, temperature=1.0, seed=9, keep_frames=True)
    np.testing.assert_allclose(again.p_yes, br.p_yes, atol=1e-6)
    assert again.head.shape == again.wrist.shape == (6, 3, 16, 16, 3)  # the views after each step, kept
    np.testing.assert_array_equal(again.head[:, -1], br.final_head)
    np.testing.assert_allclose(again.uncertainty, br.uncertainty, atol=1e-5)
    other = open_loop(wm, head, wrist, instr, br.actions[::-1].copy(), temperature=0.0, seed=9)
    assert other.p_yes.shape == (6, 3) and not np.allclose(other.p_yes, br.p_yes)
