"""The default VLA, small enough to train on a CPU: binned actions decoded in parallel.

* vision: one randomly initialised transformers ``ConvNextModel`` per view (head, wrist); the last
  feature map is flattened, so the trunk keeps where things are;
* instruction: words hashed into a fixed table (no vocabulary file; any instruction works), with a
  position embedding, averaged;
* proprio (only with ``policy.proprio``; off by default because the world model imagines images,
  not proprio, so an MBPO policy sees cameras and instruction only): normalised with the
  demonstrations' mean and std (buffers saved with the weights);
* action head: one linear layer giving ``H x 7 x n_bins`` logits, i.e. one categorical per
  (step, dim) of the chunk, all from one forward pass (OpenVLA-OFT style parallel decoding with
  256 bins). That gives PPO exact log-probabilities and entropies of a whole chunk, and the bins are
  the world model's action bins;
* value head: a two-layer MLP on the same trunk (the critic PPO bootstraps with).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from mbpo_ray.config import PolicyConfig
from mbpo_ray.policy.base import ActionBins, Observations, Policy, resize_views
from mbpo_ray.world_model.layout import words_of

TEXT_BUCKETS = 4096
MAX_WORDS = 32
PROPRIO_DIM = 8


def hash_words(texts, max_words: int = MAX_WORDS) -> torch.Tensor:
    """(B, max_words) ids in 1..TEXT_BUCKETS-1 (0 = padding) from stable word hashes."""
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    for i, text in enumerate(texts):
        words = words_of(text)[:max_words]
        ids[i, : len(words)] = torch.tensor([1 + zlib.crc32(w.encode()) % (TEXT_BUCKETS - 1) for w in words],
                                            dtype=torch.long)
    return ids


def vision_encoder(cfg: PolicyConfig) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextModel

    conf = ConvNextConfig(num_channels=3, patch_size=4, num_stages=len(cfg.widths), hidden_sizes=cfg.widths,
                          depths=cfg.depths, image_size=cfg.image_size)
    return ConvNextModel(conf)


class BinnedVLA(Policy):
    def __init__(self, cfg: PolicyConfig, bins: ActionBins):
        super().__init__(bins)
        self.cfg = cfg
        self.head_enc, self.wrist_enc = vision_encoder(cfg), vision_encoder(cfg)
        with torch.no_grad():
            feat = self.head_enc(pixel_values=torch.zeros(1, 3, cfg.image_size, cfg.image_size)).last_hidden_state
        hid = cfg.hidden_size
        self.head_proj = nn.Sequential(nn.Flatten(), nn.Linear(feat[0].numel(), hid), nn.GELU())
        self.wrist_proj = nn.Sequential(nn.Flatten(), nn.Linear(feat[0].numel(), hid), nn.GELU())
        self.word_emb = nn.Embedding(TEXT_BUCKETS, cfg.text_width, padding_idx=0)
        self.word_pos = nn.Parameter(torch.zeros(MAX_WORDS, cfg.text_width))
        self.proprio_proj = nn.Linear(PROPRIO_DIM, 64) if cfg.proprio else None
        self.register_buffer("proprio_mean", torch.zeros(PROPRIO_DIM))
        self.register_buffer("proprio_std", torch.ones(PROPRIO_DIM))
        width = 2 * hid + cfg.text_width + (64 if cfg.proprio else 0)
        self.trunk = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hid), nn.GELU(), nn.Linear(hid, hid),
                                   nn.GELU())
        self.action_head = nn.Linear(hid, bins.chunk_size * bins.action_dim * bins.n_bins)
        self.value_head = nn.Sequential(nn.Linear(hid, hid), nn.GELU(), nn.Linear(hid, 1))

    def set_proprio_stats(self, proprio: np.ndarray) -> None:
        p = torch.as_tensor(np.asarray(proprio, dtype=np.float32))
        self.proprio_mean.copy_(p.mean(0))
        self.proprio_std.copy_(p.std(0).clamp_min(1e-3))

    def features(self, obs: Observations) -> torch.Tensor:
        dev, size = self.device, self.cfg.image_size
        head = self.head_enc(pixel_values=resize_views(obs.head, size).to(dev)).last_hidden_state
        wrist = self.wrist_enc(pixel_values=resize_views(obs.wrist, size).to(dev)).last_hidden_state
        ids = hash_words(obs.instruction).to(dev)
        mask = (ids > 0).float().unsqueeze(-1)
        text = ((self.word_emb(ids) + self.word_pos) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        parts = [self.head_proj(head), self.wrist_proj(wrist), text]
        if self.cfg.proprio:
            prop = torch.as_tensor(obs.proprio, dtype=torch.float32, device=dev) - self.proprio_mean
            parts.append(self.proprio_proj(prop / self.proprio_std))
        return self.trunk(torch.cat(parts, dim=-1))

    def logits_and_value(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.features(obs)
        b = self.bins
        logits = self.action_head(z).reshape(len(z), b.chunk_size, b.action_dim, b.n_bins)
        # the critic reads the trunk's features but does not train them: its gradients (value targets
        # bootstrapped from an imperfect world model) never move what the actor computes
        return logits, self.value_head(self.value_input(z).detach()).squeeze(-1)
