"""A Ctrl-World-style video-diffusion world model, built to measure imagination throughput.

Ctrl-World predicts the frames of an action chunk with a Stable Video Diffusion UNet conditioned on
the current views and the actions. This baseline keeps that shape at the size of our UMM:

* backbone: diffusers' ``UNetSpatioTemporalConditionModel`` (SVD's UNet: spatial + temporal
  resnets and attention), configured to within +-20% of the UMM transformer's parameter count;
* latent space: the UMM's own VQ tokenizer (same size, same 64 px input): continuous encoder
  latents (8 x 8 x 32 per view) before quantisation, decoded by its decoder, so both world models
  pay for the same image codec;
* views: head and wrist side by side in one latent (8 x 16), denoised jointly;
* frames: 5 predicted frames per action chunk of H = 10 actions (the end of every second action);
  the last one is the next observation;
* conditioning: the current views' latents concatenated to every noisy frame on channels (SVD's
  image conditioning); actions through cross-attention: one token per frame, the embedding of the
  two actions that frame ends, plus a frame-position embedding;
* sampling: 50 Euler steps on SVD's EDM-style schedule (Karras sigmas, v-prediction), without
  classifier-free guidance (SVD uses it, doubling the cost: leaving it out favours the baseline);
* reward: Ctrl-World has no reward head; a separate small CNN on the decoded next views (head and
  wrist stacked) gives P(success), and its cost is included.

Weights are random: throughput depends on the shapes, not on what the weights learned.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

FRAMES = 5
STEPS = 50


def unet_config(channels: tuple[int, int] = (64, 96)) -> dict:
    """SVD's UNet pattern (attention blocks at the high resolution, a plain block at the low one) at
    2 resolution levels of the 8 x 16 latent; (64, 96) channels give 3.70 M parameters."""
    return dict(
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=channels, layers_per_block=1, cross_attention_dim=channels[0],
        num_attention_heads=tuple(c // 32 for c in channels), addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=96, num_frames=FRAMES,
    )


class RewardCNN(nn.Module):
    """P(success) from the next head and wrist frames (6 channels, 64 px)."""

    def __init__(self):
        super().__init__()
        chans = [6, 16, 32, 64, 64]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)).squeeze(-1)


class CtrlWorldBaseline:
    """``imagine(head, wrist, actions)``: uint8 views (B, S, S, 3) + chunks (B, H, 7) -> next views, P(yes)."""

    def __init__(self, tokenizer, channels: tuple[int, int] = (64, 96), chunk_size: int = 10, seed: int = 0):
        from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

        torch.manual_seed(seed)
        self.tokenizer, self.vq = tokenizer, tokenizer.model.eval()
        c = tokenizer.preset.latent_channels
        self.unet = UNetSpatioTemporalConditionModel(in_channels=2 * c, out_channels=c, **unet_config(channels)).eval()
        width = channels[0]
        self.chunk_size = chunk_size
        self.action_embed = nn.Linear(7 * (chunk_size // FRAMES), width)
        self.frame_embed = nn.Parameter(torch.randn(FRAMES, width) * 0.02)
        self.reward = RewardCNN().eval()
        self.scheduler_config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                     beta_end=0.012, prediction_type="v_prediction", timestep_type="continuous",
                                     use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                                     interpolation_type="linear", timestep_spacing="leading", steps_offset=1)
        self._scheduler_cls = EulerDiscreteScheduler

    def parameter_counts(self) -> dict:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"unet": count(self.unet), "action_conditioning": count(self.action_embed) + self.frame_embed.numel(),
                "reward_cnn": count(self.reward), "vq_codec": count(self.vq)}

    @torch.no_grad()
    def _latents(self, frames: np.ndarray) -> torch.Tensor:
        from mbpo_ray.world_model.tokenizer import to_tensor

        return self.vq.encode(to_tensor(frames, self.tokenizer.preset.image_size)).latents

    @torch.no_grad()
    def imagine(self, head: np.ndarray, wrist: np.ndarray, actions: np.ndarray, seed: int = 0):
        """Next head and wrist frames (uint8) and P(yes); ``self.timings`` holds the seconds per phase."""
        from mbpo_ray.world_model.tokenizer import to_frames

        b = len(head)
        t = [time.perf_counter()]
        cond = torch.cat([self._latents(head), self._latents(wrist)], dim=-1)  # (B, C, h, 2w): views side by side
        t.append(time.perf_counter())
        cond = cond[:, None].expand(b, FRAMES, *cond.shape[1:])
        acts = torch.as_tensor(actions, dtype=torch.float32).reshape(b, FRAMES, -1)
        tokens = self.action_embed(acts) + self.frame_embed  # one token per predicted frame
        time_ids = torch.tensor([[6.0, 127.0, 0.02]]).expand(b, 3)  # SVD's fps, motion bucket, noise augmentation
        sched = self._scheduler_cls(**self.scheduler_config)
        sched.set_timesteps(STEPS)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(cond.shape, generator=g) * sched.init_noise_sigma
        for step in sched.timesteps:
            inp = torch.cat([sched.scale_model_input(x, step), cond], dim=2)
            v = self.unet(inp, step, encoder_hidden_states=tokens, added_time_ids=time_ids).sample
            x = sched.step(v, step, x).prev_sample
        t.append(time.perf_counter())
        last = x[:, -1]  # the frame after the whole chunk
        w = last.shape[-1] // 2
        views = self.vq.decode(torch.cat([last[..., :w], last[..., w:]])).sample  # quantised, then decoded
        nxt_head, nxt_wrist = views[:b], views[b:]
        t.append(time.perf_counter())
        p_yes = self.reward(torch.cat([nxt_head, nxt_wrist], dim=1))
        t.append(time.perf_counter())
        self.timings = {"encode": t[1] - t[0], "denoise": t[2] - t[1], "decode": t[3] - t[2], "reward": t[4] - t[3]}
        return to_frames(nxt_head), to_frames(nxt_wrist), p_yes.numpy()
