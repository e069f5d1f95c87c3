"""Image tokenizer: a small VQ model (diffusers' ``VQModel``) with one codebook for both cameras.

Presets:
* ``cpu``: 64x64 input, 8x8 codes per view, 512 codes (trains in minutes on a laptop CPU)
* ``cluster``: 128x128 input, 16x16 codes per view, 1024 codes

Or a pretrained diffusers ``VQModel`` folder (``save_pretrained``): ``ImageTokenizer.from_pretrained_vq``,
and ``ImageTokenizer.load`` takes such a folder too (codebook size and latent grid read from the model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TokenizerPreset:
    image_size: int
    codes_side: int
    codebook_size: int
    channels: tuple[int, ...]
    latent_channels: int = 32

    @property
    def codes_per_view(self) -> int:
        return self.codes_side * self.codes_side


PRESETS = {
    "cpu": TokenizerPreset(image_size=64, codes_side=8, codebook_size=512, channels=(16, 32, 64, 64)),
    "cluster": TokenizerPreset(image_size=128, codes_side=16, codebook_size=1024, channels=(64, 128, 128, 256)),
}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (N, H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, size, size) in [-1, 1] (area resize when S != size)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def to_frames(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def paste_kept(decoded: np.ndarray, current: np.ndarray, next_codes: np.ndarray, current_codes: np.ndarray) -> np.ndarray:
    """``decoded`` (N, S, S, 3), the next codes rendered, with the current frame's own pixels put back
    in every patch whose code did not change (a ``<keep>``): what did not change stays exact, instead
    of passing through the tokenizer's loss. All codes kept gives the current frame back."""
    n, size = len(decoded), decoded.shape[1]
    side = math.isqrt(next_codes.shape[1])
    if current.shape != decoded.shape or side * side != next_codes.shape[1] or size % side:
        raise ValueError(f"frames {current.shape} and {decoded.shape} with {next_codes.shape[1]} codes per view "
                         "do not fit one patch grid")
    same = (np.asarray(next_codes) == np.asarray(current_codes)).reshape(n, side, 1, side, 1, 1)
    patch = size // side
    out = np.where(same, current.reshape(n, side, patch, side, patch, 3), decoded.reshape(n, side, patch, side, patch, 3))
    return out.reshape(decoded.shape)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """The reference images at the tokenizer's resolution (what imagined frames are compared to)."""
    return frames if frames.shape[1] == size else to_frames(to_tensor(frames, size))


class ImageTokenizer:
    def __init__(self, preset: TokenizerPreset, model=None):
        from diffusers import VQModel

        self.preset = preset
        n = len(preset.channels)
        if model is None and preset.image_size // 2 ** (n - 1) != preset.codes_side:
            raise ValueError(f"{n} blocks downsample {preset.image_size} to "
                             f"{preset.image_size // 2 ** (n - 1)}, not {preset.codes_side}")
        self.model = model or VQModel(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=preset.channels, layers_per_block=1, latent_channels=preset.latent_channels,
            num_vq_embeddings=preset.codebook_size, vq_embed_dim=preset.latent_channels,
            norm_num_groups=min(32, preset.channels[0]),
            sample_size=preset.image_size,  # the frame size, read back by from_pretrained_vq
        )

    # ------------------------------------------------------------------ codes
    @torch.no_grad()
    def encode(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (N, S, S, 3) -> int64 codes (N, codes_per_view)."""
        self.model.eval()
        out = []
        for i in range(0, len(frames), batch):
            h = self.model.encode(to_tensor(frames[i : i + batch], self.preset.image_size)).latents
            _, _, (_, _, idx) = self.model.quantize(h)
            out.append(idx.reshape(len(h), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.preset.codes_per_view), np.int64)

    @torch.no_grad()
    def decode(self, codes: np.ndarray, batch: int = 256) -> np.ndarray:
        """int codes (N, codes_per_view) -> uint8 frames (N, size, size, 3)."""
        self.model.eval()
        s, c = self.preset.codes_side, self.preset.latent_channels
        out = []
        for i in range(0, len(codes), batch):
            idx = torch.as_tensor(np.asarray(codes[i : i + batch]), dtype=torch.long)
            q = self.model.quantize.get_codebook_entry(idx.reshape(-1), (len(idx), s, s, c))
            out.append(to_frames(self.model.decode(q, force_not_quantize=True).sample))
        return np.concatenate(out)

    # ------------------------------------------------------------------ persistence
    def save(self, out: str | Path, metrics: dict | None = None) -> None:
        out = Path(out)
        self.model.save_pretrained(out / "vq")
        meta = {"preset": asdict(self.preset), "metrics": metrics or {}}
        (out / "tokenizer.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ImageTokenizer:
        from diffusers import VQModel

        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            if _is_vq_folder(path):
                return cls.from_pretrained_vq(path)
            raise FileNotFoundError(f"{path} is not an image tokenizer (no tokenizer.json, nor a diffusers VQModel "
                                    "folder); make one with `mbpo-ray train-tokenizer STORE --out DIR`")
        meta = json.loads((path / "tokenizer.json").read_text())
        p = meta["preset"]
        preset = TokenizerPreset(**{**p, "channels": tuple(p["channels"])})
        return cls(preset, VQModel.from_pretrained(path / "vq"))

    @classmethod
    def from_pretrained_vq(cls, path: str | Path, image_size: int | None = None) -> ImageTokenizer:
        """A pretrained diffusers ``VQModel`` (a ``save_pretrained`` folder) as the tokenizer: frames are
        resized to ``image_size`` (default: the model's ``sample_size``); the codebook size is the model's
        ``num_vq_embeddings`` and the code grid is what its encoder makes of one such frame."""
        from diffusers import VQModel

        path = Path(path)
        if not _is_vq_folder(path):
            raise FileNotFoundError(f"{path} is not a diffusers VQModel folder (config.json with _class_name VQModel)")
        model = VQModel.from_pretrained(path).eval()
        c = model.config
        size = image_size or c.sample_size
        size = int(size[0] if isinstance(size, list | tuple) else size)
        if c.in_channels != 3 or c.out_channels != 3:
            raise ValueError(f"{path}: the VQModel maps {c.in_channels} -> {c.out_channels} channels, not RGB")
        with torch.no_grad():
            grid = model.encode(torch.zeros(1, 3, size, size)).latents.shape
        if grid[-1] != grid[-2]:
            raise ValueError(f"{path}: a {size}x{size} frame gives a {grid[-2]}x{grid[-1]} code grid, not a square")
        preset = TokenizerPreset(image_size=size, codes_side=int(grid[-1]), codebook_size=int(c.num_vq_embeddings),
                                 channels=tuple(c.block_out_channels), latent_channels=int(c.vq_embed_dim or grid[1]))
        return cls(preset, model)

    # ------------------------------------------------------------------ training
    def train(self, frames: np.ndarray, steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
              restart_every: int = 50) -> Iterator[dict]:
        """Reconstruction (MSE) + VQ commitment loss on random minibatches; yields metrics per step.

        Codes unused for ``restart_every`` steps are re-seeded from current encoder outputs (dead-code
        restart), which keeps the codebook in use.
        """
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        data = to_tensor(frames, self.preset.image_size)
        m = self.model
        opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
        usage = torch.zeros(self.preset.codebook_size)
        m.train()
        for step in range(steps):
            x = data[torch.from_numpy(rng.integers(0, len(data), batch))]
            h = m.encode(x).latents
            quant, commit, (_, _, idx) = m.quantize(h)
            rec = F.mse_loss(m.decode(quant, force_not_quantize=True).sample, x)
            loss = rec + commit.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            sched.step()
            usage += torch.bincount(idx.reshape(-1).cpu(), minlength=len(usage)).float()
            if (step + 1) % restart_every == 0:
                dead = torch.nonzero(usage == 0).reshape(-1)
                if len(dead) and step < 0.8 * steps:
                    z = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
                    with torch.no_grad():
                        m.quantize.embedding.weight[dead] = z[torch.randint(len(z), (len(dead),))]
                usage.zero_()
            yield {"step": step, "loss": loss.item(), "recon_mse": rec.item(), "lr": sched.get_last_lr()[0],
                   "codes_used": int((usage > 0).sum())}
        m.eval()


def _is_vq_folder(path: Path) -> bool:
    conf = path / "config.json"
    return conf.is_file() and json.loads(conf.read_text()).get("_class_name") == "VQModel"
