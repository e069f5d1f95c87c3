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
from mbpo_ray.seeds import derive_seed


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
    # (B, n) the world model's mean surprisal over the step's generated codes (0 where not recorded)
    uncertainty: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # (B, n) the frame reward's P(success) on the imagined views, when the world model has one loaded
    # (whichever answer decides the reward); NaN where not recorded
    p_yes_frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (B,) branches of one start state share it
    start_ids: list[str] = field(default_factory=list)  # "episode_id:chunk_index" of each start state
    to_go: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (B,) start's chunks to its episode's end
    policy_version: int = 0
    world_model_version: int = 0

    def __post_init__(self) -> None:
        if self.uncertainty.shape != self.reward.shape:
            self.uncertainty = np.zeros(self.reward.shape, np.float32)
        if self.p_yes_frames.shape != self.reward.shape:
            self.p_yes_frames = np.full(self.reward.shape, np.nan, np.float32)
        if len(self.group) != len(self.instruction):
            if len(self.group):
                raise ValueError(f"group has {len(self.group)} entries for {len(self.instruction)} branches")
            self.group = np.arange(len(self.instruction), dtype=np.int64)

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
            if name == "group":  # ids stay unique across the parts
                offsets = np.cumsum([0] + [int(v.max()) + 1 if len(v) else 0 for v in vals[:-1]])
                out[name] = np.concatenate([v + o for v, o in zip(vals, offsets, strict=True)])
            elif isinstance(vals[0], np.ndarray):
                out[name] = np.concatenate(vals)
            elif isinstance(vals[0], list):
                out[name] = [v for x in vals for v in x]
            else:
                out[name] = min(vals)  # versions: the oldest one that generated any of them
        return Branches(**out)


def imagine(world_model, policy: Policy, head: np.ndarray, wrist: np.ndarray, instructions: list[str],
            n_chunks: int, temperature: float = 1.0, seed: int = 0, greedy: bool = False,
            group: np.ndarray | None = None, max_uncertainty: float = 0.0, stop_at_success: bool = True) -> Branches:
    """Roll ``n_chunks`` imagined chunk steps from real frames ``head``/``wrist`` (B, S, S, 3).

    ``world_model`` is a :class:`mbpo_ray.world_model.evaluate.WorldModel` (tokenizer + engine).
    ``group`` (B,) names the branches that start from the same state (default: one group each).
    ``max_uncertainty`` > 0: a step whose imagined transition is more uncertain than this (mean
    surprisal of its generated codes, nats) is not taken: the branch ends before it, truncated, and
    bootstraps from the observation it stood at, so no reward or frame the model does not know is used.
    ``stop_at_success=False`` takes every step whatever the answers (a diagnostic's action chunks:
    several steps of a branch may then be marked terminal).
    """
    b = len(instructions)
    gen = torch.Generator().manual_seed(seed)
    head_codes, wrist_codes, head_img, wrist_img = world_model.start(head, wrist)
    size, hz = head_img.shape[1], policy.bins.chunk_size
    rec = {
        "head": np.zeros((b, n_chunks, size, size, 3), np.uint8), "wrist": np.zeros((b, n_chunks, size, size, 3), np.uint8),
        "actions": np.zeros((b, n_chunks, hz, 7), np.float32), "token_log_prob": np.zeros((b, n_chunks, hz, 7), np.float32),
        "value": np.zeros((b, n_chunks), np.float32), "reward": np.zeros((b, n_chunks), np.float32),
        "p_yes": np.zeros((b, n_chunks), np.float32), "uncertainty": np.zeros((b, n_chunks), np.float32),
        "p_yes_frames": np.full((b, n_chunks), np.nan, np.float32),
        "terminal": np.zeros((b, n_chunks), bool),
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
        r = world_model.imagine_step([instructions[i] for i in idx], head_codes[idx], wrist_codes[idx], list(acts),
                                     temperature=temperature, seed=derive_seed(seed, j + 1),
                                     head_frames=head_img[idx], wrist_frames=wrist_img[idx])
        rec["uncertainty"][idx, j] = r.uncertainty
        unsure = max_uncertainty > 0 and r.uncertainty > max_uncertainty
        if np.any(unsure):  # not taken: these branches end where they stand
            rec["valid"][idx[unsure], j] = False
            alive[idx[unsure]] = False
            keep = ~unsure
            idx, r = idx[keep], r.take(keep)
        if r.p_yes_frames is not None:
            rec["p_yes_frames"][idx, j] = r.p_yes_frames
        success = r.p_yes > 0.5
        rec["p_yes"][idx, j], rec["reward"][idx, j], rec["terminal"][idx, j] = r.p_yes, success.astype(np.float32), success
        head_codes[idx], wrist_codes[idx] = r.head, r.wrist
        head_img[idx], wrist_img[idx] = r.head_frames, r.wrist_frames
        if stop_at_success:
            alive[idx[success]] = False
    with torch.no_grad():
        last_value = policy.act(Observations(head_img, wrist_img, proprio, list(instructions)), greedy=True).value
    return Branches(**rec, instruction=list(instructions), last_value=last_value.numpy().astype(np.float32),
                    final_head=head_img, final_wrist=wrist_img,
                    group=np.arange(b, dtype=np.int64) if group is None else np.asarray(group, np.int64))
