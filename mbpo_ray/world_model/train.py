"""Train the UMM world model: any Hugging Face causal LM over the token layout, with accelerate.

Checkpoint folder ``OUT``::

    OUT/model/        save_pretrained (config.json + model.safetensors): loads in transformers and vLLM;
                      the weights with the lowest held-out loss (OUT/best.json says which step)
    OUT/tokenizer/    the image tokenizer used to make the codes
    OUT/layout.json   the token layout (vocabulary, action bins)
    OUT/split.json    training and held-out episode ids
    OUT/state/        latest weights, optimizer, scheduler, RNG and step, for ``--resume``
    OUT/tb/           TensorBoard: per-segment losses (head, wrist, reward), held-out losses
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mbpo_ray.config import ConfigError, WorldModelConfig
from mbpo_ray.replay import ReplayStore
from mbpo_ray.world_model.data import Episodes, load_episodes, sequences, split_episodes
from mbpo_ray.world_model.layout import BOS, EOS, KEEP, PAD, TokenLayout, chunk_sum
from mbpo_ray.world_model.pretrained import base_vocab_size, load_pretrained_backbone
from mbpo_ray.world_model.tokenizer import ImageTokenizer

IGNORE = -100


def build_backbone(cfg: WorldModelConfig, layout: TokenLayout):
    """A causal LM of type ``cfg.backbone`` (llama, mistral, qwen2, ...) trained from scratch, or with
    ``cfg.pretrained`` the LM in that folder with the layout's tokens appended (its own sizes kept)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.pretrained:
        return load_pretrained_backbone(cfg.pretrained, layout)

    try:
        conf = AutoConfig.for_model(
            cfg.backbone, vocab_size=layout.vocab_size, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=layout.max_len(), bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
            tie_word_embeddings=False,
        )
    except ValueError as exc:
        raise ValueError(f"world_model.backbone={cfg.backbone!r} is not a transformers model type ({exc})") from None
    return AutoModelForCausalLM.from_config(conf)


def collate(prompts: list[list[int]], targets: list[list[int]], layout: TokenLayout):
    """Right-padded ids, labels only on the target, and a segment id per label position."""
    seqs = [p + t for p, t in zip(prompts, targets, strict=True)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), layout.sp.pad, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    segment = torch.full_like(ids, -1)
    seg = layout.segments()
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p) : len(p) + len(t)] = torch.tensor(t)
        for j, name in enumerate(("head", "wrist", "reward")):
            s = seg[name]
            segment[i, len(p) + s.start : len(p) + s.stop] = j
    return ids, labels, segment


def segment_losses(model, ids, labels, segment, reward_weight: float = 1.0, pad: int = PAD,
                   change_weight: float = 1.0, keep: int = KEEP) -> dict[str, torch.Tensor]:
    """Cross-entropy per segment; ``loss`` is the mean over generated tokens with the reward answer
    counted ``reward_weight`` times (one token among ~130 image codes otherwise carries almost none of
    the gradient, and the answer is what MBPO learns from) and every view code that is not ``<keep>``
    (with keep codes: a patch that changes over the chunk, mostly where the arm moves, which is where
    the actions show) counted ``change_weight`` times. ``pad``, ``keep``: the layout's ``sp`` ids."""
    logits = model(input_ids=ids, attention_mask=(ids != pad) | (labels != IGNORE)).logits[:, :-1]
    tgt, seg = labels[:, 1:], segment[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), reduction="none",
                         ignore_index=IGNORE).reshape(tgt.shape)
    changed = ((seg == 0) | (seg == 1)) & (tgt != keep)
    weight = torch.where(seg == 2, reward_weight, torch.where(changed, change_weight, 1.0))[tgt != IGNORE]
    out = {"loss": (ce[tgt != IGNORE] * weight).sum() / weight.sum()}
    for j, name in enumerate(("head", "wrist", "reward")):
        out[name] = ce[seg == j].mean()
    return out


class TokenData:
    """All transitions of some episodes, tokenized once."""

    def __init__(self, ep: Episodes, tokenizer: ImageTokenizer, layout: TokenLayout):
        self.ep = ep
        self.head_codes = tokenizer.encode(ep.head)
        self.wrist_codes = tokenizer.encode(ep.wrist)
        self.rows = ep.transitions()
        self.prompts, self.targets = sequences(ep, self.head_codes, self.wrist_codes, layout, self.rows)

    def batch(self, idx, layout: TokenLayout):
        return collate([self.prompts[i] for i in idx], [self.targets[i] for i in idx], layout)


def prepare(store: ReplayStore, tokenizer: ImageTokenizer, cfg: WorldModelConfig, out: Path, seed: int):
    """Split, fit the layout on training episodes, tokenize. Reuses split and layout on resume."""
    if (out / "split.json").is_file():
        split = json.loads((out / "split.json").read_text())
        layout = TokenLayout.load(out / "layout.json")
        if cfg.pretrained and layout.base_vocab != base_vocab_size(cfg.pretrained):
            raise ConfigError(f"{out} was trained with another backbone vocabulary ({layout.base_vocab} tokens) "
                             f"than world_model.pretrained={cfg.pretrained!r}")
        if layout.action_sums != cfg.action_sums:
            raise ConfigError(f"{out} was trained with world_model.action_sums={str(layout.action_sums).lower()}: "
                              "continue it with the same value, or train into another --out")
    else:
        base = base_vocab_size(cfg.pretrained) if cfg.pretrained else 0  # checks the folder before any work
        train_ids, test_ids = split_episodes(store, cfg.holdout_episodes, seed)
        split = {"train": train_ids, "heldout": test_ids}
        ep = load_episodes(store, train_ids)
        acts = np.concatenate([ep.actions[k, : ep.num_actions[k]] for k in ep.transitions()])
        h, a = store.spec.chunk_size, store.spec.action_dim
        sums = (np.stack([chunk_sum(ep.actions[k, : ep.num_actions[k]], h, a) for k in ep.transitions()])
                if cfg.action_sums else None)
        from libero.libero import benchmark  # the full LIBERO instruction vocabulary

        texts = list(ep.instruction)
        for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
            texts += [t.language for t in benchmark.get_benchmark_dict()[suite]().tasks]
        layout = TokenLayout.fit(texts, acts, tokenizer.preset.codebook_size, tokenizer.preset.codes_per_view,
                                 h, keep_codes=cfg.keep_codes, base_vocab=base, chunk_sums=sums)
        out.mkdir(parents=True, exist_ok=True)
        layout.save(out / "layout.json")
        (out / "split.json").write_text(json.dumps(split, indent=1))
    train = TokenData(load_episodes(store, split["train"]), tokenizer, layout)
    held = TokenData(load_episodes(store, split["heldout"]), tokenizer, layout) if split["heldout"] else None
    return layout, train, held


def optimizer(model, lr: float, warmup_steps: int, steps: int):
    """(AdamW, its schedule): the world model's, a linear warm-up, then cosine decay to 5% at ``steps``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps)
                                              * max(0.05, 0.5 * (1 + math.cos(math.pi * s / steps))))
    return opt, sched


def train_world_model(store_uri: str, tokenizer_dir: str, out: str, cfg: WorldModelConfig, seed: int = 0,
                      resume: bool = False) -> dict:
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out_p = Path(out)
    if out_p.exists() and any(out_p.iterdir()) and not resume:
        raise FileExistsError(f"{out} exists and is not empty: pass --resume to continue it, or another --out")
    torch.manual_seed(seed)
    store = ReplayStore.open(store_uri)
    tokenizer = ImageTokenizer.load(tokenizer_dir)
    layout, train, held = prepare(store, tokenizer, cfg, out_p, seed)
    if not (out_p / "tokenizer").exists():
        if (Path(tokenizer_dir) / "tokenizer.json").is_file():
            shutil.copytree(tokenizer_dir, out_p / "tokenizer")
        else:  # a pretrained diffusers VQModel folder: saved in the tokenizer format
            tokenizer.save(out_p / "tokenizer", {"pretrained_vq": True})
    (out_p / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    model = build_backbone(cfg, layout) if not (out_p / "model").exists() else _load(out_p / "model")
    opt, sched = optimizer(model, cfg.lr, cfg.warmup_steps, cfg.steps)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model, opt, sched = acc.prepare(model, opt, sched)
    step, best, stale = 0, float("inf"), 0
    if resume and (out_p / "state").exists():
        acc.load_state(str(out_p / "state"))
        saved = json.loads((out_p / "state" / "step.json").read_text())
        step, best = saved["step"], saved.get("best_heldout_loss", float("inf"))
        stale = saved.get("evals_since_best", 0)
    tb = SummaryWriter(str(out_p / "tb"))
    rng = np.random.default_rng(seed + step)
    t0, minutes = time.time(), 0.0
    bar = tqdm(total=cfg.steps, initial=step, desc="train world model", unit="step", dynamic_ncols=True)
    model.train()
    while step < cfg.steps and minutes < cfg.max_minutes:
        ids, labels, seg = train.batch(rng.integers(0, len(train.rows), cfg.batch_size), layout)
        losses = segment_losses(model, ids.to(acc.device), labels.to(acc.device), seg.to(acc.device),
                                cfg.reward_weight, layout.sp.pad, cfg.change_weight, layout.sp.keep)
        acc.backward(losses["loss"])
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        minutes = (time.time() - t0) / 60
        for k, v in losses.items():
            tb.add_scalar(f"train/{k}", float(v), step)
        bar.update(1)
        bar.set_postfix(loss=f"{float(losses['loss']):.3f}", head=f"{float(losses['head']):.2f}",
                        rew=f"{float(losses['reward']):.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or minutes >= cfg.max_minutes:
            # the served weights (OUT/model) are those with the lowest held-out loss seen so far
            loss = float("-inf")
            if held is not None:
                h = heldout_losses(acc.unwrap_model(model), held, layout, cfg.reward_weight, cfg.change_weight)
                for k, v in h.items():
                    tb.add_scalar(f"heldout/{k}", v, step)
                loss = h["loss"]
            if loss < best or held is None:
                best, stale = (loss if held is not None else best), 0
                acc.unwrap_model(model).save_pretrained(out_p / "model", safe_serialization=True)
                (out_p / "best.json").write_text(json.dumps({"step": step, "heldout_loss": loss}))
            else:
                stale += 1
            acc.save_state(str(out_p / "state"))
            (out_p / "state" / "step.json").write_text(json.dumps({"step": step, "best_heldout_loss": best,
                                                                    "evals_since_best": stale}))
            if cfg.patience and stale >= cfg.patience:
                bar.write(f"held-out loss has not improved for {stale} evaluations: stopping at step {step}")
                break
    bar.close()
    tb.close()
    return {"steps": step, "train_minutes": round(minutes, 2), "params": sum(p.numel() for p in model.parameters())}


@torch.no_grad()
def heldout_losses(model, data: TokenData, layout: TokenLayout, reward_weight: float = 1.0,
                   change_weight: float = 1.0, batch: int = 32) -> dict[str, float]:
    model.eval()
    sums: dict[str, list[float]] = {}
    for i in range(0, len(data.rows), batch):
        ids, labels, seg = data.batch(range(i, min(i + batch, len(data.rows))), layout)
        for k, v in segment_losses(model, ids, labels, seg, reward_weight, layout.sp.pad, change_weight,
                                   layout.sp.keep).items():
            sums.setdefault(k, []).append(float(v))
    model.train()
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)



def load_trained(ckpt: str | Path, weights: str = "best"):
    """A checkpoint's model in transformers: ``best``, the served weights (``OUT/model``, lowest held-out
    loss), or ``last``, the latest weights of its resume state (``OUT/state``: the most fitted to the
    training data, for a judge that asks what training longer did)."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    if weights not in ("best", "last"):
        raise ValueError(f"weights={weights!r}: choose 'best' or 'last'")
    model = _load(ckpt / "model")
    if weights == "last":
        state = ckpt / "state" / "model.safetensors"
        if not state.is_file():
            raise FileNotFoundError(f"{ckpt}: no state/model.safetensors (written by `train-world-model` at each "
                                    "evaluation): its last weights are not there; judge its best weights instead")
        model.load_state_dict(load_file(state))
    return model
