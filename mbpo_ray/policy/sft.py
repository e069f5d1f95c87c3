"""Behaviour cloning (SFT) of a policy on the first successful demonstrations of each task.

With ``sft.rollouts_per_task`` it also imitates the first successful rollouts of a policy recorded
in the store (source ``real``): self-imitation, the simplest policy improvement from real outcomes
(filtered behaviour cloning). ``init`` continues from a trained policy (its bins and architecture)
instead of a fresh one.

Checkpoint folder ``OUT``::

    OUT/model.safetensors  weights (load with ``mbpo_ray.policy.load_policy(OUT)``)
    OUT/policy.json        policy config, action bins, the demonstrations and rollouts used
                           (episode ids per task), the policy started from, suite, store image
                           size, the SFT config and the step saved
    OUT/state/             weights, optimizer, scheduler, RNG and step, for ``--resume``
    OUT/tb/                TensorBoard scalars: loss, entropy, greedy bin accuracy, learning rate
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mbpo_ray.config import Config, parse_task_ids
from mbpo_ray.policy import ActionBins, Observations, Policy, build_policy, read_policy_meta, save_policy
from mbpo_ray.policy.base import resize_uint8
from mbpo_ray.replay import ReplayError, ReplayStore, frames


@dataclass
class Demos:
    """Every chunk row of the chosen demonstrations, frames already at the policy's size."""

    head: torch.Tensor  # (R, s, s, 3) uint8
    wrist: torch.Tensor
    proprio: np.ndarray  # (R, 8)
    actions: np.ndarray  # (R, H, 7)
    mask: torch.Tensor  # (R, H) valid steps
    instruction: list[str]  # (R,)

    def __len__(self) -> int:
        return len(self.instruction)

    def batch(self, idx: np.ndarray, augment: bool) -> tuple[Observations, np.ndarray, torch.Tensor]:
        head, wrist = self.head[idx], self.wrist[idx]
        if augment:
            head, wrist = random_shift(head), random_shift(wrist)
        obs = Observations(head, wrist, self.proprio[idx], [self.instruction[i] for i in idx])
        return obs, self.actions[idx], self.mask[idx]


def random_shift(x: torch.Tensor) -> torch.Tensor:
    """Pad by size/16 pixels (edge replicate) and crop back at a random offset per image."""
    n, s = x.shape[0], x.shape[1]
    pad = max(1, s // 16)
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (n, 2))
    out = torch.stack([padded[i, :, off[i, 0]: off[i, 0] + s, off[i, 1]: off[i, 1] + s] for i in range(n)])
    return out.to(torch.uint8).permute(0, 2, 3, 1)


def select_demos(store: ReplayStore, suite: str, tasks: str, per_task: int,
                 source: str = "demo") -> dict[str, list[str]]:
    """Task id -> ids of the first ``per_task`` successful episodes of ``source`` of that task, in store
    order (``demo``: demonstrations; ``real``: recorded policy rollouts)."""
    what = "demonstration" if source == "demo" else "policy rollout"
    eps = [e for e in store.episodes if e.suite == suite and e.source == source and e.success and e.chunks > 0]
    wanted = parse_task_ids(tasks) if tasks else sorted({e.task_id for e in eps})
    if not wanted:
        raise ReplayError(f"{store.root} holds no successful {suite} {what}s: collect some first")
    chosen: dict[str, list[str]] = {}
    for t in wanted:
        ids = [e.episode_id for e in eps if e.task_id == t][:per_task]
        if not ids:
            raise ReplayError(f"{store.root} holds no successful {what} of {suite} task {t}")
        chosen[str(t)] = ids
    return chosen


def load_demos(store: ReplayStore, episode_ids: list[str], image_size: int) -> Demos:
    s, h, a = store.spec.image_size, store.spec.chunk_size, store.spec.action_dim
    cols = ["head", "wrist", "proprio", "actions", "num_actions", "is_last", "instruction"]
    parts: dict[str, list] = {k: [] for k in ("head", "wrist", "proprio", "actions", "num", "instr")}
    for eid in episode_ids:
        t = store.read_episode(eid, cols)
        keep = ~t.column("is_last").to_numpy(zero_copy_only=False).astype(bool)
        parts["head"].append(resize_uint8(frames(t, "head", s)[keep], image_size))
        parts["wrist"].append(resize_uint8(frames(t, "wrist", s)[keep], image_size))
        parts["proprio"].append(np.stack(t.column("proprio").to_numpy(zero_copy_only=False))[keep])
        parts["actions"].append(np.stack(t.column("actions").to_numpy(zero_copy_only=False)).reshape(-1, h, a)[keep])
        parts["num"].append(t.column("num_actions").to_numpy()[keep])
        parts["instr"] += [t.column("instruction")[0].as_py()] * int(keep.sum())
    num = np.concatenate(parts["num"])
    return Demos(head=torch.cat(parts["head"]), wrist=torch.cat(parts["wrist"]),
                 proprio=np.concatenate(parts["proprio"]).astype(np.float32),
                 actions=np.concatenate(parts["actions"]).astype(np.float32),
                 mask=torch.from_numpy(np.arange(h)[None, :] < num[:, None]), instruction=parts["instr"])


def _new_policy(cfg: Config, demos: Demos, chunk_size: int) -> Policy:
    valid = demos.actions[demos.mask.numpy()]
    bins = ActionBins.fit(valid, chunk_size, cfg.policy.n_bins)
    policy = build_policy(cfg.policy, bins)
    if hasattr(policy, "set_proprio_stats"):
        policy.set_proprio_stats(demos.proprio)
    return policy


def sft_loss(policy: Policy, obs: Observations, actions: np.ndarray, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean cross-entropy per (step, dim) categorical over valid steps, and diagnostics."""
    logp, ent, _ = policy.evaluate(obs, actions, mask)
    n = mask.sum() * policy.bins.action_dim
    return {"loss": -logp.sum() / n, "entropy": ent.sum().detach() / n}


def _prepare(store: ReplayStore, store_uri: str, out_p: Path, cfg: Config, resume: bool, init: str | None,
             frame_codec: str | None) -> tuple[Policy, Demos, dict]:
    """The policy to train (fresh, continued from ``init``, or the saved run's), the rows it imitates,
    and the metadata its checkpoint records."""
    from mbpo_ray.policy import load_policy

    sc, start = cfg.sft, None
    if resume:  # the saved run decides demos, rollouts, bins and architecture
        meta = read_policy_meta(out_p)
        chosen, rollouts, init = meta["demos"], meta.get("rollouts", {}), meta.get("init")
        start = load_policy(out_p)
    else:
        chosen = select_demos(store, cfg.env.suite, sc.tasks, sc.demos_per_task)
        rollouts = (select_demos(store, cfg.env.suite, sc.tasks, sc.rollouts_per_task, source="real")
                    if sc.rollouts_per_task else {})
        if init:
            start = load_policy(init)
    ids = [i for part in (chosen, rollouts) for v in part.values() for i in v]
    size = start.cfg.image_size if start is not None else cfg.policy.image_size
    demos = load_demos(store, ids, size)
    policy = start.train() if start is not None else _new_policy(cfg, demos, store.spec.chunk_size)
    if frame_codec and not resume:
        from mbpo_ray.policy import load_frame_codec

        policy.frame_codec = load_frame_codec(frame_codec)
    extra = {"demos": chosen, "rollouts": rollouts, "init": str(init) if init else None, "suite": cfg.env.suite,
             "store_image_size": store.spec.image_size, "store": str(store_uri), "sft": asdict(sc),
             "instructions": sorted(set(demos.instruction))}
    return policy, demos, extra


def train_sft(store_uri: str, out: str, cfg: Config, resume: bool = False, frame_codec: str | None = None,
              init: str | None = None) -> dict:
    """Behaviour cloning; with ``frame_codec`` (a tokenizer folder) every frame the policy sees, here
    and wherever the checkpoint is used, round-trips through that tokenizer first. ``init``: a policy
    checkpoint to continue from instead of a fresh policy."""
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    sc, out_p = cfg.sft, Path(out)
    if out_p.exists() and any(out_p.iterdir()) and not resume:
        raise FileExistsError(f"{out} exists and is not empty: pass --resume to continue it, or another --out")
    if resume and not (out_p / "state" / "step.json").is_file():
        raise FileNotFoundError(f"--resume: {out} holds no saved SFT state (state/step.json)")
    if init and not (Path(init) / "policy.json").is_file():
        raise FileNotFoundError(f"--init: {init} is not a policy checkpoint (no policy.json)")
    torch.manual_seed(sc.seed)
    store = ReplayStore.open(store_uri)
    policy, demos, extra = _prepare(store, store_uri, out_p, cfg, resume, init, frame_codec)
    opt = torch.optim.AdamW(policy.parameters(), lr=sc.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, sc.warmup_steps)))
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model, opt, sched = acc.prepare(policy, opt, sched)
    step, rng = 0, np.random.default_rng(sc.seed)
    if resume:
        acc.load_state(str(out_p / "state"))
        saved = json.loads((out_p / "state" / "step.json").read_text())
        step, rng.bit_generator.state = saved["step"], saved["numpy_rng"]
    tb = SummaryWriter(str(out_p / "tb"))
    t0, minutes, first = time.time(), 0.0, step
    bar = tqdm(total=sc.steps, initial=step, desc="sft", unit="step", dynamic_ncols=True)
    model.train()
    while step < sc.steps and minutes < sc.max_minutes:
        obs, actions, mask = demos.batch(rng.integers(0, len(demos), sc.batch_size), sc.augment)
        losses = sft_loss(model, obs, actions, mask.to(acc.device))
        acc.backward(losses["loss"])
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        minutes = (time.time() - t0) / 60
        for k, v in losses.items():
            tb.add_scalar(f"sft/{k}", v.item(), step)
        tb.add_scalar("sft/lr", sched.get_last_lr()[0], step)
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
        if step % sc.checkpoint_every == 0 or step == sc.steps or minutes >= sc.max_minutes:
            save_policy(acc.unwrap_model(model), out_p, {**extra, "step": step})
            acc.save_state(str(out_p / "state"))
            (out_p / "state" / "step.json").write_text(
                json.dumps({"step": step, "numpy_rng": rng.bit_generator.state}))
    bar.close()
    tb.close()
    seconds = time.time() - t0
    return {"steps": step, "train_minutes": round(minutes, 3), "steps_per_s": (step - first) / max(seconds, 1e-9),
            "params": sum(p.numel() for p in policy.parameters()), "rows": len(demos),
            "demos": {t: len(ids) for t, ids in extra["demos"].items()},
            "rollouts": {t: len(ids) for t, ids in extra["rollouts"].items()}, "final_loss": losses["loss"].item() if step > first else None}
