"""What PPO and the evaluators need from any VLA policy, independent of its architecture.

* :class:`Observations`: a batch of head and wrist frames (uint8, upright, any square size), the
  instructions and 8-dim proprio.
* :class:`Policy`: ``act(obs, greedy)`` -> :class:`ActOutput` (an H x 7 action chunk per row, its
  log-probability and the critic's value) and ``evaluate(obs, actions)`` -> ``(log_prob, entropy,
  value)``. Log-probabilities and entropies are of the whole chunk (summed over its H x 7 parts).
* :class:`ActionBins`: the per-dimension action binning shared with the world model's token layout
  (256 bins, uniform between the 1st and 99th percentile of the demonstrations, bin centres decoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mbpo_ray.world_model.layout import TokenLayout


@dataclass
class Observations:
    """A batch of observations at chunk boundaries."""

    head: np.ndarray | torch.Tensor  # (B, S, S, 3) uint8, upright
    wrist: np.ndarray | torch.Tensor  # (B, S, S, 3) uint8, upright
    proprio: np.ndarray | torch.Tensor  # (B, 8) float32
    instruction: Sequence[str]  # B instructions

    @classmethod
    def single(cls, obs, instruction: str) -> Observations:
        """Batch of one from a :class:`mbpo_ray.envs.libero_env.Observation`."""
        return cls(obs.head[None], obs.wrist[None], obs.proprio[None], [instruction])

    def __len__(self) -> int:
        return len(self.instruction)


@dataclass
class ActOutput:
    actions: torch.Tensor  # (B, H, 7) float32, the bin centres of the chosen bins
    bins: torch.Tensor  # (B, H, 7) int64
    log_prob: torch.Tensor  # (B,) log-probability of the whole chunk
    value: torch.Tensor  # (B,)
    token_log_prob: torch.Tensor | None = None  # (B, H, 7) per binned dimension (sums to log_prob)


class ActionBins:
    """Per-dimension binning of actions: :class:`TokenLayout`'s ``fit``/``action_bins``/``bins_to_actions``.

    The policy and the world model share one binning rule, so a chunk the policy emits maps to the
    same integers the world model reads.
    """

    def __init__(self, low: Sequence[float], high: Sequence[float], chunk_size: int, n_bins: int = 256):
        self.layout = TokenLayout(words=(), codebook_size=0, codes_per_view=0, chunk_size=chunk_size,
                                  action_dim=len(low), n_bins=n_bins, action_low=tuple(map(float, low)),
                                  action_high=tuple(map(float, high)))

    @classmethod
    def fit(cls, actions: np.ndarray, chunk_size: int, n_bins: int = 256) -> ActionBins:
        """Edges from valid actions (N, action_dim): 1st to 99th percentile per dimension."""
        lay = TokenLayout.fit([], actions, codebook_size=0, codes_per_view=0, chunk_size=chunk_size,
                              n_bins=n_bins)
        return cls(lay.action_low, lay.action_high, chunk_size, n_bins)

    @property
    def n_bins(self) -> int:
        return self.layout.n_bins

    @property
    def chunk_size(self) -> int:
        return self.layout.chunk_size

    @property
    def action_dim(self) -> int:
        return self.layout.action_dim

    def to_bins(self, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        a = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else actions
        return torch.from_numpy(self.layout.action_bins(a))

    def to_actions(self, bins: np.ndarray | torch.Tensor) -> torch.Tensor:
        b = bins.detach().cpu().numpy() if isinstance(bins, torch.Tensor) else bins
        return torch.from_numpy(self.layout.bins_to_actions(b).astype(np.float32))

    def to_dict(self) -> dict:
        return {"action_low": list(self.layout.action_low), "action_high": list(self.layout.action_high),
                "chunk_size": self.chunk_size, "n_bins": self.n_bins}

    @classmethod
    def from_dict(cls, d: dict) -> ActionBins:
        return cls(d["action_low"], d["action_high"], d["chunk_size"], d["n_bins"])


def resize_views(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, size, size) float in [0, 1].

    Area averaging when shrinking, then rounded to 8-bit levels, so frames resized once ahead of
    training (:func:`resize_uint8`) and frames resized at acting time give the same input.
    """
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        x = x.round_().clamp_(0, 255)
    return x.div_(255.0)


def resize_uint8(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, size, size, 3) uint8, the same pixels :func:`resize_views` sees."""
    return resize_views(frames, size).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class Policy(nn.Module):
    """Base class of registered policies. Subclasses implement :meth:`logits_and_value`.

    A subclass may instead override :meth:`act` and :meth:`evaluate` wholesale (e.g. a large VLA
    whose head is not a per-(step, dim) categorical); the contract is the two methods' signatures.
    """

    # an ImageTokenizer every input frame round-trips through (encode, decode) before the policy sees
    # it: then SFT, imagination (whose frames are decoded codes) and real evaluation all show the
    # policy one kind of frame. Not a submodule: it is not trained and not in the state dict; it
    # travels with the checkpoint as ``codec/`` (see ``save_policy``).
    frame_codec = None
    # the temperature of the categoricals act() samples from and evaluate() scores under
    # (``mbpo.policy_temperature``): > 1 spreads a group's branches further apart. Set on the
    # instance by the world-model workers and the learners alike, so the PPO ratio compares the
    # distribution the branches were drawn from; not saved with the checkpoint. Greedy acting ignores it.
    temperature: float = 1.0

    def __init__(self, bins: ActionBins):
        super().__init__()
        self.bins = bins

    def preprocess(self, obs: Observations) -> Observations:
        if self.frame_codec is None:
            return obs
        c = self.frame_codec

        def through(x):
            x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            return c.decode(c.encode(x))

        return Observations(through(obs.head), through(obs.wrist), obs.proprio, obs.instruction)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def logits_and_value(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, 7, n_bins) logits of every (step, dim) categorical from one forward pass; (B,) value."""
        raise NotImplementedError

    def value_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the value head reads of the trunk's features ``z`` (``features(obs)``)."""
        return z

    @torch.no_grad()
    def act(self, obs: Observations, greedy: bool = False, generator: torch.Generator | None = None) -> ActOutput:
        logits, value = self.logits_and_value(self.preprocess(obs))
        logp = F.log_softmax(logits.float() / self.temperature, dim=-1)
        if greedy:
            bins = logp.argmax(dim=-1)
        else:
            flat = logp.exp().reshape(-1, logp.shape[-1]).cpu()
            bins = torch.multinomial(flat, 1, generator=generator).reshape(logp.shape[:-1]).to(logp.device)
        per = logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        return ActOutput(actions=self.bins.to_actions(bins), bins=bins, log_prob=per.sum(dim=(1, 2)), value=value,
                         token_log_prob=per)

    def forward(self, obs: Observations, actions, mask=None, per_token: bool = False):
        """:meth:`evaluate`, so data-parallel wrappers (DDP) see the training pass as ``forward``."""
        return self.evaluate(obs, actions, mask, per_token)

    def evaluate(self, obs: Observations, actions: torch.Tensor | np.ndarray, mask: torch.Tensor | None = None,
                 per_token: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-prob and entropy of ``actions`` (B, H, 7; floats, binned here) and the value, with grad.

        ``mask`` (B, H) marks the valid steps of chunks cut short by an episode's end (default: all).
        ``per_token``: log-probs and entropies per binned dimension (B, H, 7) instead of per chunk.
        """
        logits, value = self.logits_and_value(self.preprocess(obs))
        logp = F.log_softmax(logits.float() / self.temperature, dim=-1)
        bins = self.bins.to_bins(actions).to(logp.device)
        per = logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)  # (B, H, 7)
        ent = -(logp.exp() * logp).sum(-1)  # (B, H, 7)
        if mask is not None:
            m = mask.to(per.dtype).unsqueeze(-1)
            per, ent = per * m, ent * m
        if per_token:
            return per, ent, value
        return per.sum(dim=(1, 2)), ent.sum(dim=(1, 2)), value
