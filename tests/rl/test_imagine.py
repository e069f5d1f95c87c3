"""Branched imagination with a real (tiny, random) world model on the transformers engine."""

from __future__ import annotations

import numpy as np
import torch

from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches, imagine
from mbpo_ray.world_model.evaluate import WorldModel
from tests.rl.conftest import INSTRUCTIONS, tiny_policy


def test_branches_record_what_the_policy_saw_and_did(tiny_world_model):
    wm = WorldModel(tiny_world_model, engine="hf")
    policy = tiny_policy()
    rng = np.random.default_rng(0)
    b, n = 12, 3
    head, wrist = (rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    instr = [INSTRUCTIONS[i % 2] for i in range(b)]
    br = imagine(wm, policy, head, wrist, instr, n_chunks=n, seed=3)
    assert br.head.shape == (b, n, 16, 16, 3) and br.actions.shape == (b, n, 2, 7) and len(br) == b
    # steps are taken until the first predicted success, never after it
    assert br.valid[:, 0].all()
    for i in range(b):
        ends = np.flatnonzero(br.terminal[i])
        last = ends[0] if len(ends) else n - 1
        assert br.valid[i, : last + 1].all() and not br.valid[i, last + 1 :].any()
        assert len(ends) <= 1
    assert ((br.reward == 1.0) == br.terminal).all() and ((br.p_yes > 0.5) == br.terminal).all()
    assert br.steps == br.valid.sum() and 0 < br.steps <= b * n
    # the recorded log-probs are the behaviour policy's for the recorded observations and actions
    v = br.valid
    obs = Observations(br.head[v], br.wrist[v], np.zeros((int(v.sum()), 8), np.float32),
                       [instr[i] for i in np.nonzero(v)[0]])
    with torch.no_grad():
        logp, _, value = policy.evaluate(obs, torch.from_numpy(br.actions[v]), per_token=True)
    np.testing.assert_allclose(logp.numpy(), br.token_log_prob[v], atol=1e-4)
    np.testing.assert_allclose(value.numpy(), br.value[v], atol=1e-5)
    # the start observation is the tokenizer's rendering of the real frame
    np.testing.assert_array_equal(br.head[:, 0], wm.tokenizer.decode(wm.tokenizer.encode(head)))


def test_same_seed_same_branches_and_concat(tiny_world_model):
    wm = WorldModel(tiny_world_model, engine="hf")
    policy = tiny_policy()
    rng = np.random.default_rng(1)
    head, wrist = (rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    a = imagine(wm, policy, head, wrist, INSTRUCTIONS * 2, n_chunks=2, seed=5)
    b = imagine(wm, policy, head, wrist, INSTRUCTIONS * 2, n_chunks=2, seed=5)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.final_head, b.final_head)
    a.policy_version, b.policy_version = 3, 2
    both = Branches.concat([a, b])
    assert len(both) == 8 and both.policy_version == 2 and both.actions.shape[0] == 8
