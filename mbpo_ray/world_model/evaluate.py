"""Quality report of a world model on held-out episodes.

* per view: PSNR and SSIM of the imagined next frame (after a whole chunk) against the real one,
  next to the trivial baseline "the next frame equals the current frame";
* reward: accuracy and F1 of P(yes) > 0.5 against the env's success, next to the majority class;
* a PNG grid of real vs imagined head and wrist frames over 2-chunk branched rollouts from real
  states, each chunk's imagined observation fed back as the next context;
* the counterfactual checks of :mod:`mbpo_ray.world_model.counterfactual` (reward under changed
  actions, action sensitivity, metrics by data source), greedy and at imagination's temperature.

All frames are compared at the tokenizer's resolution.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mbpo_ray.config import REWARD_SOURCES
from mbpo_ray.replay import ReplayStore
from mbpo_ray.world_model.data import Episodes, load_episodes, valid_actions
from mbpo_ray.world_model.engines.base import make_engine
from mbpo_ray.world_model.layout import TokenLayout
from mbpo_ray.world_model.tokenizer import ImageTokenizer, paste_kept, resize_frames


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, on luma) of uint8 images (N, H, W, 3)."""
    w = torch.tensor([0.299, 0.587, 0.114])
    x = (torch.from_numpy(a).float() @ w)[:, None]
    y = (torch.from_numpy(b).float() @ w)[:, None]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    k = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def blur(z):
        return F.conv2d(z, k)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    denom = float(pred.sum() + truth.sum())
    return 2 * tp / denom if denom else 1.0


def check_checkpoint(checkpoint: str) -> Path:
    path = Path(checkpoint)
    if not (path / "layout.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a world-model checkpoint (no layout.json); "
                                "make one with `mbpo-ray train-world-model`")
    return path


@dataclass
class StepResult:
    """A batch of imagined transitions."""

    head: np.ndarray  # (B, K) next head codes
    wrist: np.ndarray  # (B, K)
    p_yes: np.ndarray  # (B,)
    uncertainty: np.ndarray  # (B,) mean surprisal of the generated code tokens (nats)
    head_frames: np.ndarray | None = None  # (B, S, S, 3) the next codes decoded
    wrist_frames: np.ndarray | None = None
    p_yes_token: np.ndarray | None = None  # (B,) the UMM's yes/no answer
    p_yes_frames: np.ndarray | None = None  # (B,) the frame reward on the decoded imagined views, if loaded

    def take(self, keep: np.ndarray) -> StepResult:
        """The transitions selected by ``keep``."""
        return StepResult(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[keep]
                             for f in dataclasses.fields(self)})


class WorldModel:
    """A checkpoint folder with its engine: image frames and action chunks in, frames and P(yes) out.

    ``reward``: where P(yes) comes from: the UMM's answer token (``token``), the frame reward of
    ``CKPT/reward`` on the decoded imagined views (``frames``), or the mean of both (``mean``).
    ``load_frame_reward`` loads that model (when the folder has one) with the token answer kept as
    P(yes), so both can be compared. ``keep_pixels``: a patch whose code the model keeps shows the
    current frame's pixels (``paste_kept``), and a branch starts from the real frames themselves (at
    the tokenizer's size); off, every frame is the tokenizer's rendering of its codes."""

    def __init__(self, checkpoint: str, engine: str = "vllm", reward: str = "token", load_frame_reward: bool = False,
                 keep_pixels: bool = True, **engine_kwargs):
        from mbpo_ray.world_model.frame_reward import FrameReward

        path = check_checkpoint(checkpoint)
        if reward not in REWARD_SOURCES:
            raise ValueError(f"world_model.reward_source={reward!r} is unknown: choose one of {', '.join(REWARD_SOURCES)}")
        self.layout = TokenLayout.load(path / "layout.json")
        self.tokenizer = ImageTokenizer.load(path / "tokenizer")
        self.reward = reward
        self.keep_pixels = keep_pixels
        self.frame_reward = None
        if reward != "token" or (load_frame_reward and (path / "reward" / "reward.json").is_file()):
            self.frame_reward = FrameReward.load(path / "reward")
        self.engine = make_engine(engine, str(path / "model"), self.layout, **engine_kwargs)

    def start(self, head: np.ndarray, wrist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Real frames (N, S, S, 3) -> (head codes, wrist codes, head frame, wrist frame) of a branch's
        first state: the frames at the tokenizer's size, or with ``keep_pixels`` off their rendering."""
        hc, wc = self.tokenizer.encode(head), self.tokenizer.encode(wrist)
        if self.keep_pixels:
            size = self.tokenizer.preset.image_size
            return hc, wc, resize_frames(head, size), resize_frames(wrist, size)
        return hc, wc, self.tokenizer.decode(hc), self.tokenizer.decode(wc)

    def imagine_step(self, instructions, head_codes, wrist_codes, actions, temperature=0.0, seed=0,
                     head_frames=None, wrist_frames=None) -> StepResult:
        """One chunk step. ``head_frames``/``wrist_frames``: the current views (tokenizer size), whose
        pixels kept patches show with ``keep_pixels``; without them every patch is decoded."""
        prompts = [self.layout.prompt(i, h, w, a)
                   for i, h, w, a in zip(instructions, head_codes, wrist_codes, actions, strict=True)]
        out = self.engine.imagine(prompts, temperature=temperature, seed=seed)
        head, wrist = np.stack([o.head for o in out]), np.stack([o.wrist for o in out])
        head_frames, wrist_frames = (self.render(nxt, cur, cur_frames) for nxt, cur, cur_frames in
                                     ((head, head_codes, head_frames), (wrist, wrist_codes, wrist_frames)))
        p_token, p_frames = np.array([o.p_yes for o in out]), None
        if self.frame_reward is not None:
            p_frames = self.frame_reward.p_success(head_frames, wrist_frames)
        p = {"token": p_token, "frames": p_frames,
             "mean": None if p_frames is None else (p_token + p_frames) / 2}[self.reward]
        return StepResult(head, wrist, p, np.array([o.uncertainty for o in out]), head_frames, wrist_frames,
                          p_token, p_frames)

    def render(self, codes: np.ndarray, current_codes=None, current_frames=None) -> np.ndarray:
        """Next codes -> frames, decoded once here (imagination, the report and the frame reward share them)."""
        frames = self.tokenizer.decode(codes)
        if self.keep_pixels and current_frames is not None:
            frames = paste_kept(frames, np.asarray(current_frames), codes, np.asarray(current_codes))
        return frames


def _rollout(wm: WorldModel, ep: Episodes, k: int, chunks: list[np.ndarray]) -> tuple[list, list]:
    """Decoded head and wrist frames of an imagined branch from row ``k`` under ``chunks``."""
    h, w, fh, fw = wm.start(ep.head[k : k + 1], ep.wrist[k : k + 1])
    ih, iw = [fh[0]], [fw[0]]
    for a in chunks:
        r = wm.imagine_step([ep.instruction[ep.row_episode[k]]], h, w, [a], head_frames=fh, wrist_frames=fw)
        h, w, fh, fw = r.head, r.wrist, r.head_frames, r.wrist_frames
        ih.append(r.head_frames[0])
        iw.append(r.wrist_frames[0])
    return ih, iw


def branch_grid(wm: WorldModel, ep: Episodes, out: str | Path, n_branches: int = 4, n_chunks: int = 2) -> Path:
    """Per start state, one column per chunk step: the real frames, the branch imagined under the
    recorded chunks, and a branch from the same state that differs only in its actions (the chunks
    of other time steps of the episode), head rows then wrist rows."""
    from PIL import Image, ImageDraw

    size = wm.tokenizer.preset.image_size
    trans = set(ep.transitions().tolist())
    starts = [k for k in trans if all(k + j in trans and ep.row_episode[k + j] == ep.row_episode[k]
                                      for j in range(n_chunks))]
    rng = np.random.default_rng(0)
    starts = sorted(rng.choice(sorted(starts), size=min(n_branches, len(starts)), replace=False).tolist())
    rows_all = np.array(sorted(trans))
    tiles = []
    for k in starts:
        recorded = [valid_actions(ep.actions[k + j], ep.num_actions[k + j]) for j in range(n_chunks)]
        same = rows_all[(ep.row_episode[rows_all] == ep.row_episode[k]) & ((rows_all < k) | (rows_all >= k + n_chunks))]
        other = [ep.actions[int(rng.choice(same if len(same) else rows_all))] for _ in range(n_chunks)]
        ih, iw = _rollout(wm, ep, k, recorded)
        oh, ow = _rollout(wm, ep, k, other)
        rh = resize_frames(ep.head[k : k + n_chunks + 1], size)
        rw = resize_frames(ep.wrist[k : k + n_chunks + 1], size)
        tiles.append([list(rh), ih, oh, list(rw), iw, ow])
    names = ("real head", "head, recorded actions", "head, other actions", "real wrist", "wrist, recorded actions",
             "wrist, other actions")
    pad, label_w, cols = 2, 170, n_chunks + 1
    canvas = Image.new("RGB", (label_w + cols * (size + pad), len(tiles) * len(names) * (size + pad) + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for c in range(cols):
        draw.text((label_w + c * (size + pad), 2), f"t+{c}H", fill="black")
    for b, rows in enumerate(tiles):
        for r, row in enumerate(rows):
            y = 16 + (b * len(names) + r) * (size + pad)
            draw.text((2, y + size // 2 - 5), f"start {b}: {names[r]}", fill="black")
            for c, img in enumerate(row):
                canvas.paste(Image.fromarray(img), (label_w + c * (size + pad), y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def evaluate_world_model(checkpoint: str, store_uri: str, out_dir: str, engine: str = "vllm",
                         policy_dir: str | None = None, temperature: float = 1.0, keep_pixels: bool = True) -> dict:
    """The one-step report (greedy) and the counterfactual checks (``counterfactual.py``) greedy and at
    ``temperature`` (the one imagination samples at) on the checkpoint's held-out episodes; with
    ``policy_dir`` also the reward under the policy's own sampled action tails."""
    from mbpo_ray.world_model.counterfactual import counterfactual_report

    split = json.loads((check_checkpoint(checkpoint) / "split.json").read_text())
    ids = split["heldout"]
    if not ids:
        raise ValueError(f"{checkpoint} was trained with no held-out episodes (world_model.holdout_episodes=0)")
    store = ReplayStore.open(store_uri)
    ep = load_episodes(store, ids)
    sources = [store.episode(i).source for i in ids]
    policy = None
    if policy_dir is not None:
        from mbpo_ray.policy import load_policy

        policy = load_policy(policy_dir).eval()
    wm = WorldModel(checkpoint, engine, load_frame_reward=True, keep_pixels=keep_pixels)
    try:
        report = counterfactual_report(wm, ep, sources, policy, 0.0)  # greedy: the report's own numbers
        sampled = counterfactual_report(wm, ep, sources, policy, temperature, seed=1)
        grid = branch_grid(wm, ep, Path(out_dir) / "branch_grid.png")
    finally:
        wm.engine.close()
    report.update(temperature=temperature, keep_pixels=keep_pixels, sampled=sampled, heldout_episodes=len(ids),
                  heldout_by_source={s: sources.count(s) for s in sorted(set(sources))}, grid=str(grid))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "world_model_quality.json").write_text(json.dumps(report, indent=2))
    return report
