"""A reward read from the frames alone: P(success) of an observation from its head and wrist views.

The UMM's yes/no token answers from the whole prompt (frames and the action chunk), so it can key on
action tokens, and on the policy's own states it answers poorly (the world-model quality report).
This model sees only the observation after a chunk, as the reward models of video world models do:
in imagination it reads the frames the world model imagined, so the answer follows from what the
imagined head and wrist cameras show, never from the actions.

It is trained on real observations round-tripped through the world model's tokenizer (the domain the
imagined frames come from), labelled with the env's success of the chunk that led to them; positives
are oversampled, frames shifted by a few pixels, and the weights kept are those with the best F1 on
a validation share of the training episodes. The decision threshold chosen there is folded into
the output, so ``p_success > 0.5`` is the decision, like the token's P(yes).

Folder ``CKPT/reward/`` of a world-model checkpoint: ``model.pt`` (state dict) and ``reward.json``
(sizes, threshold logit, training metrics). Made by ``mbpo-ray train-frame-reward``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mbpo_ray.replay.schema import ReplayError
from mbpo_ray.world_model.data import Episodes


@dataclass
class FrameRewardConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    positive_share: float = 0.25  # share of positives in a training batch
    eval_every: int = 200
    val_share: float = 0.15  # training episodes kept aside to pick the weights and the threshold
    width: int = 32
    seed: int = 0
    # also train (and pick the threshold) on the world model's own greedy imagined views of the same
    # transitions under their recorded chunks: the frames the reward will read in imagination
    imagined: bool = False
    engine: str = "vllm"
    keep_pixels: bool = True  # imagined views as imagination renders them (WorldModel.keep_pixels)


class FrameRewardNet(nn.Module):
    """A small CNN over both views stacked as 6 channels (float in [0, 1]) -> one logit."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [6, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(8, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3))).squeeze(-1)


def stack_views(head: np.ndarray, wrist: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) x 2 -> float (N, 6, S, S) in [0, 1]."""
    x = np.concatenate([head, wrist], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0


class FrameReward:
    """The trained classifier: decoded head and wrist frames in, P(success) out."""

    def __init__(self, net: FrameRewardNet, threshold_logit: float, image_size: int, meta: dict | None = None):
        self.net = net.eval()
        self.threshold_logit = float(threshold_logit)
        self.image_size = image_size
        self.meta = meta or {}

    @torch.no_grad()
    def p_success(self, head: np.ndarray, wrist: np.ndarray, batch: int = 256) -> np.ndarray:
        if head.shape != wrist.shape or head.ndim != 4 or head.shape[1] != self.image_size:
            raise ValueError(f"frame reward expects head and wrist frames (N, {self.image_size}, {self.image_size}, 3), "
                             f"got {head.shape} and {wrist.shape}")
        out = [torch.sigmoid(self.net(stack_views(head[i : i + batch], wrist[i : i + batch])) - self.threshold_logit)
               for i in range(0, len(head), batch)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), out / "model.pt")
        (out / "reward.json").write_text(json.dumps({"threshold_logit": self.threshold_logit,
                                                     "image_size": self.image_size, **self.meta}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> FrameReward:
        path = Path(path)
        if not (path / "reward.json").is_file() or not (path / "model.pt").is_file():
            raise FileNotFoundError(f"{path} holds no frame reward model (reward.json, model.pt); make one with "
                                    "`mbpo-ray train-frame-reward CHECKPOINT STORE`")
        meta = json.loads((path / "reward.json").read_text())
        net = FrameRewardNet(meta.get("config", {}).get("width", 32))
        net.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
        return cls(net, meta["threshold_logit"], int(meta["image_size"]), meta)


def observation_labels(ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Every observation row that follows a chunk, and the success of that chunk."""
    rows = np.flatnonzero(~ep.is_last)
    return rows + 1, ep.success[rows]


def reconstructed(tokenizer, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of ``ep`` as the tokenizer renders it (encode, then decode)."""
    return tokenizer.decode(tokenizer.encode(ep.head)), tokenizer.decode(tokenizer.encode(ep.wrist))


def best_threshold(logits: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold logit, F1) maximising F1 over the observed logits."""
    from mbpo_ray.world_model.evaluate import f1

    best_t, best_f = 0.0, -1.0
    for t in np.unique(np.round(logits, 3)):
        f = f1(logits >= t, truth)
        if f > best_f:
            best_t, best_f = float(t), f
    return best_t - 1e-4, best_f


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image shifted by up to ``pad`` pixels (replicated border)."""
    n, _, s, _ = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(n)])


@torch.no_grad()
def _logits(net: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    net.eval()
    out = torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()
    net.train()
    return out


def train_frame_reward(train: tuple[np.ndarray, np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray, np.ndarray],
                       cfg: FrameRewardConfig, progress: bool = True) -> FrameReward:
    """Fit on (head, wrist, success) frames ``train``; pick the weights and threshold on ``val``."""
    from tqdm import tqdm

    (th, tw, ty), (vh, vw, vy) = train, val
    if ty.sum() == 0 or vy.sum() == 0:
        raise ReplayError(f"frame reward needs successes to learn from: {int(ty.sum())} in training, "
                         f"{int(vy.sum())} in validation observations; add successful episodes to the store")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x, vx = stack_views(th, tw), stack_views(vh, vw)
    pos, neg = np.flatnonzero(ty), np.flatnonzero(~ty)
    net = FrameRewardNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-3)
    n_pos = max(1, int(round(cfg.batch_size * cfg.positive_share)))
    best = (-1.0, 0.0, None, 0)
    t0 = time.time()
    bar = tqdm(range(1, cfg.steps + 1), desc="train frame reward", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, cfg.batch_size - n_pos)])
        y = torch.from_numpy(ty[idx].astype(np.float32))
        loss = F.binary_cross_entropy_with_logits(net(_shift(x[idx], gen)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            t, f = best_threshold(_logits(net, vx), vy)
            if f > best[0]:
                best = (f, t, {k: v.clone() for k, v in net.state_dict().items()}, step)
            bar.set_postfix(loss=f"{loss.item():.3f}", val_f1=f"{f:.3f}", best=f"{best[0]:.3f}")
    net.load_state_dict(best[2])
    meta = {"config": asdict(cfg), "val_f1": best[0], "best_step": best[3], "train_minutes": round((time.time() - t0) / 60, 2),
            "train_observations": int(len(ty)), "train_positives": int(ty.sum()),
            "val_observations": int(len(vy)), "val_positives": int(vy.sum())}
    return FrameReward(net, best[1], int(th.shape[1]), meta)


def imagined_views(checkpoint: str, eps: list[Episodes], engine: str,
                   keep_pixels: bool = True) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per set of episodes: the world model's greedy next views of every full-chunk transition under
    its recorded chunk, labelled by that chunk's success."""
    from mbpo_ray.world_model.counterfactual import imagine_rows
    from mbpo_ray.world_model.evaluate import WorldModel

    wm = WorldModel(checkpoint, engine, keep_pixels=keep_pixels)
    try:
        out = []
        for ep in eps:
            rows = ep.transitions()
            im = imagine_rows(wm, ep, rows, [ep.actions[k] for k in rows], temperature=0.0, seed=0)
            out.append((im.head, im.wrist, ep.success[rows]))
        return out
    finally:
        wm.engine.close()


def training_split(ids: list, cfg: FrameRewardConfig) -> tuple[list[str], list[str]]:
    """(fit, validation) episode ids: a seeded ``cfg.val_share`` of the world model's training episodes
    (at least one) picks the weights and the threshold."""
    ids = [str(i) for i in np.random.default_rng(cfg.seed).permutation(ids)]
    n_val = max(1, int(round(cfg.val_share * len(ids))))
    return ids[n_val:], ids[:n_val]


def fit_frame_reward(checkpoint: str, store_uri: str, cfg: FrameRewardConfig, progress: bool = True) -> FrameReward:
    """Train the frame reward of world-model ``checkpoint`` on its training episodes in ``store_uri``
    (its held-out episodes stay unseen, for the quality report) and save it in ``checkpoint/reward``."""
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.evaluate import check_checkpoint
    from mbpo_ray.world_model.tokenizer import ImageTokenizer

    path = check_checkpoint(checkpoint)
    ids = json.loads((path / "split.json").read_text())["train"]
    if len(ids) < 2:
        raise ReplayError(f"{checkpoint} was trained on {len(ids)} episode(s): the frame reward needs at least 2")
    store = ReplayStore.open(store_uri)
    tokenizer = ImageTokenizer.load(path / "tokenizer")
    eps = [load_episodes(store, chosen) for chosen in training_split(ids, cfg)]
    parts = []
    for ep in eps:
        head, wrist = reconstructed(tokenizer, ep)
        rows, labels = observation_labels(ep)
        parts.append((head[rows], wrist[rows], labels))
    if cfg.imagined:
        parts = [tuple(np.concatenate([a, b]) for a, b in zip(part, imagined, strict=True))
                 for part, imagined in zip(parts, imagined_views(checkpoint, eps, cfg.engine, cfg.keep_pixels), strict=True)]
    model = train_frame_reward(parts[0], parts[1], cfg, progress)
    model.meta["store"] = store_uri
    tmp = path / "reward.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    shutil.rmtree(path / "reward", ignore_errors=True)  # a reward trained earlier is replaced only now
    tmp.rename(path / "reward")
    return model
