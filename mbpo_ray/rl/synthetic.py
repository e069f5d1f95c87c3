"""Branches without a world model: a policy acting on random frames, with the successes given. For
measuring and testing the learner alone (benchmarks/fsdp.py, the learner's tests)."""

from __future__ import annotations

import numpy as np
import torch

from mbpo_ray.policy import load_policy
from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches


def acted_branches(policy_dir: str, successes: dict[int, int], b: int = 4, n: int = 2, seed: int = 0) -> Branches:
    """``b`` branches of ``n`` steps acted by the policy on random frames; ``successes`` maps a branch to
    the step at which the world model said yes (the steps after it are not taken)."""
    policy = load_policy(policy_dir).eval()
    rng = np.random.default_rng(seed)
    size = policy.cfg.image_size
    head = rng.integers(0, 255, (b, n, size, size, 3), dtype=np.uint8)
    wrist = rng.integers(0, 255, (b, n, size, size, 3), dtype=np.uint8)
    instr = ["pick up the black bowl and place it on the plate"] * b
    with torch.no_grad():
        out = policy.act(Observations(head.reshape(b * n, size, size, 3), wrist.reshape(b * n, size, size, 3),
                                      np.zeros((b * n, 8), np.float32), instr * n),
                         generator=torch.Generator().manual_seed(seed))
    hz = policy.bins.chunk_size
    terminal, valid, reward = np.zeros((b, n), bool), np.ones((b, n), bool), np.zeros((b, n), np.float32)
    for i, j in successes.items():
        terminal[i, j], reward[i, j], valid[i, j + 1:] = True, 1.0, False
    return Branches(head=head, wrist=wrist, instruction=instr, actions=out.actions.numpy().reshape(b, n, hz, 7),
                    token_log_prob=out.token_log_prob.numpy().reshape(b, n, hz, 7), value=np.zeros((b, n), np.float32),
                    reward=reward, p_yes=reward.copy(), terminal=terminal, valid=valid,
                    last_value=np.zeros(b, np.float32), final_head=head[:, -1], final_wrist=wrist[:, -1])
