"""What the learner trains on: one registry of objectives over a batch of imagined branches.

An objective turns :class:`~mbpo_ray.rl.imagine.Branches` into :class:`Targets`: the chunk steps to
train on, one advantage per step (shared by the step's H x 7 action tokens in the clipped
surrogate of :func:`mbpo_ray.rl.ppo.ppo_loss`) and, where a critic is trained, its regression
targets. The learner (``learners/policy_learner.py``) only shards, steps and publishes.

* ``ppo``: GAE over the branch's chunk steps with the critic's bootstrap at the branch end (the
  paper's VLA-MBPO). ``mbpo.adv_norm`` says how advantages are scaled: ``mean`` (centred only, the
  default), ``std`` (centred and scaled to unit variance: with sparse rewards that blows the TD noise
  of an untrained critic up to the size of a real signal), ``none``.
* ``grpo``: group-relative, no critic. Each start state is branched ``mbpo.group_size`` times; a
  branch's return is its discounted imagined outcome ``gamma^j`` at the chunk step ``j`` where the
  world model answered "yes" (0 without one); its advantage is the return minus the mean of its
  group, on every step of the branch. Groups whose branches all agree carry no signal and are
  dropped. No scaling by the group's spread (a group of 7 failures and one success moves as much as
  it should, not as much as a 50/50 group). ``mbpo.reward_mode=soft`` uses the expected discounted
  success from the answers' P(yes) instead of the thresholded outcome, so two failing branches still
  differ by how close the world model judged them (``benchmarks/advantage_fidelity.py`` measures
  which definition orders a group's branches as real LIBERO does).
* ``bc``: behaviour cloning on the branches that ended in success (the paper's "BC (world model)"
  baseline in ``mbpo`` mode, self-imitation in ``online`` mode), optionally from a buffer of every
  success so far and anchored to the demonstrations; it needs no targets, the learner handles it
  (``learners/imitation.py``).

``mbpo.null_control`` shuffles the branches' returns across the batch before the advantages are
formed: the same loop and the same amount of updating, with the link between a branch's actions
and its imagined outcome cut. A gain that survives it is not the world model's doing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mbpo_ray.rl.advantage_fidelity import hard_returns, soft_returns
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.rl.ppo import gae

AllReduce = Callable[[torch.Tensor], torch.Tensor]  # sum over the learner ranks (identity with one)


@dataclass
class Targets:
    mask: np.ndarray  # (B, n) bool: the chunk steps trained on
    advantages: torch.Tensor  # (N,) float32, N = mask.sum(), in mask order
    returns: torch.Tensor | None  # (N,) critic targets; None: the objective trains no critic
    stats: dict[str, float] = field(default_factory=dict)


def branch_returns(br: Branches, gamma: float, mode: str = "hard") -> np.ndarray:
    """(B,) discounted imagined outcome. ``hard``: gamma^j at the first predicted success, else 0.
    ``soft``: sum_j gamma^j p_j prod_{k<j} (1 - p_k) over the taken steps, p = P(yes)."""
    if mode == "soft":
        return soft_returns(np.where(br.valid, br.p_yes, 0.0), gamma)
    return hard_returns((br.terminal & br.valid).astype(np.float64), gamma)


def _null(values: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(values)


def ppo_targets(br: Branches, mc, allreduce: AllReduce, seed: int = 0) -> Targets:
    f = torch.from_numpy
    reward, terminal = br.reward, br.terminal
    if mc.null_control:  # whole branches' reward rows, so a terminal step stays where the branch ended
        order = np.random.default_rng(seed).permutation(len(br))
        reward = np.where(br.valid, reward[order], 0.0).astype(np.float32)
        terminal = br.terminal & (reward > 0)
    adv, ret = gae(f(reward), f(br.value), f(terminal), f(br.valid), f(br.last_value), mc.gamma, mc.lam)
    v = f(br.valid)
    adv, ret = adv[v], ret[v]
    moments = allreduce(torch.stack([adv.sum(), (adv**2).sum(), torch.tensor(float(len(adv)))]).double())
    mean = moments[0] / moments[2].clamp_min(1)
    std = (moments[1] / moments[2].clamp_min(1) - mean**2).clamp_min(1e-12).sqrt()
    if mc.adv_norm == "std":
        adv = (adv - mean) / (std + 1e-8)
    elif mc.adv_norm == "mean":
        adv = adv - mean
    return Targets(br.valid.copy(), adv.float(), ret.float(),
                   {"advantage_mean": float(mean), "advantage_std": float(std)})


def grpo_targets(br: Branches, mc, allreduce: AllReduce, seed: int = 0) -> Targets:
    ret = branch_returns(br, mc.gamma, mc.reward_mode)
    if mc.null_control:
        ret = _null(ret, seed)
    groups = br.group
    adv = np.zeros(len(br))
    informative = np.zeros(len(br), bool)
    for g in np.unique(groups):
        sel = groups == g
        if sel.sum() > 1 and np.ptp(ret[sel]) > 1e-9:
            adv[sel] = ret[sel] - ret[sel].mean()
            informative[sel] = True
    mask = br.valid & informative[:, None]
    per_step = np.broadcast_to(adv[:, None], br.valid.shape)[mask]
    counts = allreduce(torch.tensor([float(len(np.unique(groups))), float(len(np.unique(groups[informative]))),
                                     float(ret.sum()), float(len(br))], dtype=torch.float64))
    return Targets(mask, torch.from_numpy(per_step.astype(np.float32)), None,
                   {"groups": float(counts[0]), "informative_groups": float(counts[1]),
                    "return_mean": float(counts[2] / counts[3])})


OBJECTIVES: dict[str, Callable[..., Targets] | None] = {"ppo": ppo_targets, "grpo": grpo_targets, "bc": None}
