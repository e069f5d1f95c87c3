"""PPO on branched imagined rollouts: GAE over chunk steps and the clipped surrogate.

A branch starts at a real state and runs ``n`` chunk steps in the world model. Step ``j`` has the
reward ``r_j`` (1 when the world model answers "yes, the task is done" after the chunk, else 0) and
ends the branch when it is 1 (``terminal``). A branch that reaches ``n`` steps without success is
truncated: GAE bootstraps it with the critic's value of the last imagined observation.

Ratios are per action token (each of the H x 7 binned dimensions of a chunk), as PPO for token
VLAs does; the advantage of a chunk step is shared by its tokens. A chunk-level ratio (the product
of 70 token ratios) leaves the clip range after tiny updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, terminal: torch.Tensor, valid: torch.Tensor,
        last_value: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of (B, n) branches.

    ``values`` are V(s_j) of the observation each step acted on; ``last_value`` (B,) is V of the
    observation after step n-1 (used only where the branch did not terminate); ``valid`` masks the
    steps after a terminal one. Returns (advantages, returns), zero on invalid steps.
    """
    b, n = rewards.shape
    adv = torch.zeros_like(rewards)
    running = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    next_value = last_value
    for j in reversed(range(n)):
        cont = (~terminal[:, j]).to(rewards.dtype)
        delta = rewards[:, j] + gamma * next_value * cont - values[:, j]
        running = delta + gamma * lam * cont * running
        running = torch.where(valid[:, j], running, torch.zeros_like(running))
        adv[:, j] = running
        next_value = torch.where(valid[:, j], values[:, j], next_value)
    returns = (adv + values) * valid.to(values.dtype)
    return adv, returns


@dataclass
class PPOLoss:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
             returns: torch.Tensor, entropy: torch.Tensor, clip: float, value_coef: float,
             entropy_coef: float) -> PPOLoss:
    """Clipped surrogate over per-token log-probs (N, T) with per-sample advantages (N,).

    ``entropy`` (N, T) per token; ``values``/``returns`` (N,). Advantages are used as given
    (normalise them over the valid samples before).
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    policy_loss = -surrogate.mean()
    value_loss = 0.5 * (values - returns).pow(2).mean()
    ent = entropy.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # k3 estimator, >= 0
        clip_fraction = ((ratio - 1).abs() > clip).float().mean()
    loss = policy_loss + value_coef * value_loss - entropy_coef * ent
    return PPOLoss(loss, policy_loss.detach(), value_loss.detach(), ent.detach(), approx_kl, clip_fraction)


def normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=False) + eps) if x.numel() > 1 else x - x.mean()
