"""Behaviour cloning in the learner (``mbpo.objective=bc``): the policy maximises the likelihood of the
chunks of branches that ended in success, the world model's judgement in ``mbpo`` mode (the paper's
"BC (world model)" baseline), LIBERO's in ``online`` and ``simulator`` mode (filtered behaviour
cloning on the policy's own successful episodes: self-imitation). No critic, no advantages.

Two options make it the operator that improves the recipe's policy from its own successes
(``benchmarks/self_imitation.py``), inside the loop:

* ``mbpo.bc_buffer``: every successful branch's chunk steps are kept (up to this many rows, the
  oldest dropped first) and every minibatch is drawn from all of them, not only from the current
  batch. Each rank keeps the successes of its own shards; the buffer is part of the checkpoint.
* ``mbpo.bc_demo_coef``: every step also clones a minibatch of the starting policy's SFT
  demonstrations (from the store), with this weight: an anchor to the demonstrations, as the cloning
  round of self-imitation trains on demonstrations and successes together.

``mbpo.null_control`` shuffles which branches count as successful within each rank's shard: the same
number of branches imitated, chosen without regard to their outcome.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mbpo_ray.policy.base import resize_uint8
from mbpo_ray.policy.sft import Demos, load_demos
from mbpo_ray.rl.imagine import Branches

PROPRIO = 8


def branch_rows(br: Branches, rows: np.ndarray, size: int) -> Demos:
    """The chunk steps ``rows`` ((B, n) bool) selects, frames at the policy's ``size``, every action valid."""
    n = int(rows.sum())
    head, wrist = br.head[rows], br.wrist[rows]
    if head.shape[1] != size:  # (an empty selection too: every part of the buffer has the policy's size)
        head, wrist = ((resize_uint8(head, size).numpy(), resize_uint8(wrist, size).numpy()) if n
                       else (np.zeros((0, size, size, 3), np.uint8),) * 2)
    h = br.actions.shape[2]
    return Demos(head=torch.from_numpy(np.ascontiguousarray(head)), wrist=torch.from_numpy(np.ascontiguousarray(wrist)),
                 proprio=np.zeros((n, PROPRIO), np.float32), actions=br.actions[rows].astype(np.float32),
                 mask=torch.ones((n, h), dtype=torch.bool),
                 instruction=list(np.array(br.instruction, dtype=object)[np.nonzero(rows)[0]]))


def cat_rows(parts: list[Demos]) -> Demos:
    return Demos(head=torch.cat([p.head for p in parts]), wrist=torch.cat([p.wrist for p in parts]),
                 proprio=np.concatenate([p.proprio for p in parts]), actions=np.concatenate([p.actions for p in parts]),
                 mask=torch.cat([p.mask for p in parts]), instruction=[i for p in parts for i in p.instruction])


def take_rows(d: Demos, idx: np.ndarray) -> Demos:
    return Demos(head=d.head[idx], wrist=d.wrist[idx], proprio=d.proprio[idx], actions=d.actions[idx],
                 mask=d.mask[idx], instruction=[d.instruction[i] for i in idx])


def demonstration_rows(store_uri: str | None, policy_dir: str, task_ids: list[int], size: int) -> Demos:
    """Every chunk row of the SFT demonstrations of ``policy_dir`` (its ``policy.json``) of ``task_ids``."""
    from mbpo_ray.policy import read_policy_meta
    from mbpo_ray.replay import ReplayStore

    if store_uri is None:
        raise ValueError("mbpo.bc_demo_coef > 0 clones the SFT demonstrations from the replay store: give the run a store")
    chosen = read_policy_meta(policy_dir).get("demos") or {}
    ids = [i for t in task_ids for i in chosen.get(str(t), [])]
    if not ids:
        raise ValueError(f"{policy_dir} names no SFT demonstrations of tasks {task_ids} (policy.json 'demos'): "
                         "set mbpo.bc_demo_coef=0, or start from a policy made by `mbpo-ray sft`")
    return load_demos(ReplayStore.open(store_uri), ids, size)


class Imitation:
    """A learner rank's cloning state: its buffer of successful chunk steps and the demonstrations."""

    FILE = "bc_buffer_rank{}.pt"

    def __init__(self, mc, size: int, augment: bool, demos: Demos | None, rank: int):
        self.mc, self.size, self.augment, self.demos, self.rank = mc, size, augment, demos, rank
        self.buffer: Demos | None = None

    def add(self, br: Branches, rng: np.random.Generator | None, blind: bool | None = None) -> Demos:
        """The batch's successful chunk steps (``blind``, by default under the null control: as many
        branches, drawn by ``rng`` whatever their outcome), also kept in the buffer (``mbpo.bc_buffer``
        rows at most); returns what the minibatches are drawn from."""
        success = br.terminal.any(axis=1)
        if self.mc.null_control if blind is None else blind:
            success = rng.permutation(success)
        new = branch_rows(br, br.valid & success[:, None], self.size)
        if not self.mc.bc_buffer:
            return new
        pool = new if self.buffer is None else cat_rows([self.buffer, new])
        if len(pool) > self.mc.bc_buffer:
            pool = take_rows(pool, np.arange(len(pool) - self.mc.bc_buffer, len(pool)))
        self.buffer = pool
        return pool

    def keep(self, br: Branches) -> int:
        """Keep the successful branches of a real batch in the buffer, as they are (the null control
        shuffles imagined outcomes only); the rows kept (0 without a buffer)."""
        if not self.mc.bc_buffer:
            return 0
        before = 0 if self.buffer is None else len(self.buffer)
        return len(self.add(br, None, blind=False)) - before

    def save(self, folder: str) -> None:
        if self.buffer is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            torch.save(self.buffer, Path(folder) / self.FILE.format(self.rank))

    def load(self, folder: str) -> None:
        path = Path(folder) / self.FILE.format(self.rank)
        if self.mc.bc_buffer and path.is_file():
            self.buffer = torch.load(path, weights_only=False)

    def update(self, learner, br: Branches, version: int, seed: int) -> dict:
        """``mbpo.updates_per_batch`` steps on minibatches of the successes (and of the demonstrations
        with ``mbpo.bc_demo_coef``). Every rank takes part in every step (DDP's all-reduce); a rank
        with no success to draw from contributes its demonstrations, or a zero-weighted sample, and
        the success term is the mean over every rank's samples."""
        mc = self.mc
        rng, own = np.random.default_rng(seed), np.random.default_rng([seed, self.rank])  # own: this rank's demos
        t0 = time.perf_counter()
        pool = self.add(br, rng)
        n = len(pool)
        m = min(mc.minibatch_size, n)
        counts = learner._allreduce(torch.tensor([float(n), float(m)], dtype=torch.float64))
        anchored = self.demos is not None and mc.bc_demo_coef > 0
        stats: dict[str, list[float]] = {}
        steps = mc.updates_per_batch if counts[0] > 0 or anchored else 0  # the same decision on every rank
        # DDP averages gradients over ranks: scale so the success term is the mean over every rank's samples
        scale = learner.world_size / float(counts[1]) if n else 0.0
        for _ in range(steps):
            parts = [take_rows(pool, rng.choice(n, size=m, replace=False))] if n else []
            if anchored:
                parts.append(take_rows(self.demos, own.choice(len(self.demos), size=mc.minibatch_size,
                                                              replace=len(self.demos) < mc.minibatch_size)))
            elif not n:  # nothing here: the first step of the first branch, weight 0
                parts.append(branch_rows(br, _first_step(br), self.size))
            rows = cat_rows(parts)
            obs, actions, mask = rows.batch(np.arange(len(rows)), self.augment)
            logp, ent, _ = learner._forward(obs, torch.from_numpy(actions), mask)
            k = m if n else 0
            loss = -logp[:k].sum() * scale / logp[0].numel()
            stat = {"loss": -float(logp[:k].detach().mean()), "entropy": float(ent[:k].detach().mean())} if k else {}
            if anchored:
                tokens = mask[k:].sum() * logp.shape[-1]
                demo = -logp[k:].sum() / tokens
                loss = loss + mc.bc_demo_coef * demo
                stat["demo_loss"] = float(demo.detach())
            learner._step(loss)
            for key, v in stat.items():
                stats.setdefault(key, []).append(v)
        metrics = {key: float(np.mean(v)) for key, v in stats.items()}
        metrics.update(samples=n, trained=steps * m, success_branches=int(br.terminal.any(axis=1).sum()),
                       buffer_rows=len(self.buffer) if self.buffer is not None else n)
        return learner._publish(version, metrics, t0)


def _first_step(br: Branches) -> np.ndarray:
    rows = np.zeros(br.valid.shape, dtype=bool)
    rows[0, 0] = True
    return rows

