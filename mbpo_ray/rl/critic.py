"""A critic that has seen real returns: Monte-Carlo targets from the stored real episodes.

Every chunk boundary ``k`` of a stored episode (demonstrations and policy rollouts, failures
included) gets the discounted return of what really happened from there: ``gamma^(C-1-k)`` when the
episode succeeded after its last chunk ``C-1`` (success is the only reward), 0 when it failed.
``gamma`` is per chunk step, the same ``mbpo.gamma`` GAE discounts imagined chunk steps with, so
real and imagined targets share one scale.

The learner fits the value head on these before MBPO starts (``mbpo.critic_fit_steps``) and keeps
mixing a minibatch of them into every critic update (``mbpo.critic_real_coef``), so bootstrapped
imagined targets cannot drift away from what the real task pays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbpo_ray.policy.base import Observations
from mbpo_ray.replay import ReplayStore, frames


@dataclass
class RealReturns:
    head: np.ndarray  # (N, S, S, 3) uint8 chunk-boundary observations
    wrist: np.ndarray
    instruction: list[str]
    returns: np.ndarray  # (N,) float32 discounted Monte-Carlo return from that state
    source: list[str]  # per row: demo | real

    def __len__(self) -> int:
        return len(self.returns)

    def observations(self, idx: np.ndarray) -> Observations:
        return Observations(self.head[idx], self.wrist[idx], np.zeros((len(idx), 8), np.float32),
                            [self.instruction[i] for i in idx])


def episode_returns(chunks: int, success: bool, gamma: float) -> np.ndarray:
    """(chunks,) return from each chunk boundary of one episode."""
    if not success:
        return np.zeros(chunks, np.float32)
    return (gamma ** np.arange(chunks - 1, -1, -1)).astype(np.float32)


def real_returns(store_uri: str, gamma: float, task_ids: list[int] | None = None, max_rows: int = 4096,
                 seed: int = 0, parts: tuple[str, ...] | None = None) -> RealReturns:
    """Targets for every chunk boundary of the store's episodes of ``task_ids`` (at most ``max_rows``
    rows, a uniform draw when there are more); only of the store ``parts`` named, when given."""
    store = ReplayStore.open(store_uri)
    episodes = store.episodes if parts is None else [store.episodes[i] for i in store.episodes_in(parts)]
    eps = [e for e in episodes if e.chunks > 0 and (task_ids is None or e.task_id in task_ids)]
    if not eps:
        raise ValueError(f"{store_uri} holds no episodes of tasks {task_ids}: nothing to fit the critic on")
    rows = [(i, k) for i, e in enumerate(eps) for k in range(e.chunks)]
    if len(rows) > max_rows:
        pick = np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False)
        rows = [rows[j] for j in sorted(pick)]
    parts = {"head": [], "wrist": [], "instruction": [], "returns": [], "source": []}
    for i in sorted({i for i, _ in rows}):
        e = eps[i]
        ks = np.array([k for j, k in rows if j == i])
        t = store.read_episode(e.episode_id, ["head", "wrist", "instruction"]).take(ks)
        parts["head"].append(frames(t, "head", store.spec.image_size))
        parts["wrist"].append(frames(t, "wrist", store.spec.image_size))
        parts["instruction"] += t.column("instruction").to_pylist()
        parts["returns"].append(episode_returns(e.chunks, e.success, gamma)[ks])
        parts["source"] += [e.source] * len(ks)
    return RealReturns(np.concatenate(parts["head"]), np.concatenate(parts["wrist"]), parts["instruction"],
                       np.concatenate(parts["returns"]), parts["source"])
