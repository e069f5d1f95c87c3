"""Branched imagined rollouts: the policy acts, the world model imagines head, wrist and reward.

From B real start states, every branch runs up to ``n`` chunk steps. At each step the policy samples
an action chunk from the current (imagined) observation, then one world-model call imagines the next
head view, the wrist view conditioned on it, and P(success) for all live branches at once. A branch
ends early when the world model answers "yes". The policy always sees frames as the tokenizer
renders them (the start state too), so real and imagined steps look alike to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mbpo_ray.policy.base import Observations, Policy


@dataclass
class Branches:
    """B branches of up to n chunk steps (numpy, ready to ship between processes)."""

    head: np.ndarray  # (B, n, S, S, 3) uint8: the observation each step acted on
    wrist: np.ndarray  # (B, n, S, S, 3)
    instruction: list[str]  # (B,)
    actions: np.ndarray  # (B, n, H, 7) float32
    token_log_prob: np.ndarray  # (B, n, H, 7) behaviour policy's log-probs per binned dimension
    value: np.ndarray  # (B, n) V(observation) under the behaviour policy
    reward: np.ndarray  # (B, n) 1.0 when the world model answered yes after the chunk
    p_yes: np.ndarray  # (B, n)
    terminal: np.ndarray  # (B, n) bool: the branch ended with a predicted success at this step
    valid: np.ndarray  # (B, n) bool: the step was taken (False after a terminal step)
    last_value: np.ndarray  # (B,) V(observation after the last step): the truncation bootstrap
    final_head: np.ndarray  # (B, S, S, 3) that last observation
    final_wrist: np.ndarray
    start_ids: list[str] = field(default_factory=list)  # "episode_id:chunk_index" of each start state
    policy_version: int = 0
    world_model_version: int = 0

    def __len__(self) -> int:
        return len(self.instruction)

    @property
    def steps(self) -> int:
        return int(self.valid.sum())

    def take(self, lo: int, hi: int) -> Branches:
        """Branches lo..hi-1 (versions kept)."""
        return Branches(**{name: (v[lo:hi] if isinstance(v, (np.ndarray, list)) else v)
                           for name, v in ((n, getattr(self, n)) for n in Branches.__dataclass_fields__)})

    @staticmethod
    def concat(parts: list[Branches]) -> Branches:
        out = {}
        for name in Branches.__dataclass_fields__:
            vals = [getattr(p, name) for p in parts]
            if isinstance(vals[0], np.ndarray):
                out[name] = np.concatenate(vals)
            elif isinstance(vals[0], list):
                out[name] = [v for x in vals for v in x]
            else:
                out[name] = min(vals)  # versions: the oldest one that generated any of them
        return Branches(**out)


def imagine(world_model, policy: Policy, head: np.ndarray, wrist: np.ndarray, instructions: list[str],
            n_chunks: int, temperature: float = 1.0, seed: int = 0, greedy: bool = False) -> Branches:
    """Roll ``n_chunks`` imagined chunk steps from real frames ``head``/``wrist`` (B, S, S, 3).

    ``world_model`` is a :class:`mbpo_ray.world_model.evaluate.WorldModel` (tokenizer + engine).
    """
    tok = world_model.tokenizer
    b = len(instructions)
    gen = torch.Generator().manual_seed(seed)
    head_codes, wrist_codes = tok.encode(head), tok.encode(wrist)
    head_img, wrist_img = tok.decode(head_codes), tok.decode(wrist_codes)
    size, hz = head_img.shape[1], policy.bins.chunk_size
    rec = {
        "head": np.zeros((b, n_chunks, size, size, 3), np.uint8), "wrist": np.zeros((b, n_chunks, size, size, 3), np.uint8),
        "actions": np.zeros((b, n_chunks, hz, 7), np.float32), "token_log_prob": np.zeros((b, n_chunks, hz, 7), np.float32),
        "value": np.zeros((b, n_chunks), np.float32), "reward": np.zeros((b, n_chunks), np.float32),
        "p_yes": np.zeros((b, n_chunks), np.float32), "terminal": np.zeros((b, n_chunks), bool),
        "valid": np.zeros((b, n_chunks), bool),
    }
    alive = np.ones(b, bool)
    proprio = np.zeros((b, 8), np.float32)  # not imagined; policies used here must not read it
    for j in range(n_chunks):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        obs = Observations(head_img[idx], wrist_img[idx], proprio[idx], [instructions[i] for i in idx])
        out = policy.act(obs, greedy=greedy, generator=gen)
        acts = out.actions.numpy()
        rec["head"][idx, j], rec["wrist"][idx, j] = head_img[idx], wrist_img[idx]
        rec["actions"][idx, j], rec["token_log_prob"][idx, j] = acts, out.token_log_prob.numpy()
        rec["value"][idx, j], rec["valid"][idx, j] = out.value.numpy(), True
        h, w, p = world_model.step([instructions[i] for i in idx], head_codes[idx], wrist_codes[idx], list(acts),
                                   temperature=temperature, seed=seed + 7919 * (j + 1))
        success = p > 0.5
        rec["p_yes"][idx, j], rec["reward"][idx, j], rec["terminal"][idx, j] = p, success.astype(np.float32), success
        head_codes[idx], wrist_codes[idx] = h, w
        head_img[idx], wrist_img[idx] = tok.decode(h), tok.decode(w)
        alive[idx[success]] = False
    with torch.no_grad():
        last_value = policy.act(Observations(head_img, wrist_img, proprio, list(instructions)), greedy=True).value
    return Branches(**rec, instruction=list(instructions), last_value=last_value.numpy().astype(np.float32),
                    final_head=head_img, final_wrist=wrist_img)
