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

from dataclasses import dataclass, field

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
    episode: list[str] = field(default_factory=list)  # per row: its episode's id
    chunk: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per row: its chunk index

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
    parts = {"head": [], "wrist": [], "instruction": [], "returns": [], "source": [], "episode": [], "chunk": []}
    for i in sorted({i for i, _ in rows}):
        e = eps[i]
        ks = np.array([k for j, k in rows if j == i])
        t = store.read_episode(e.episode_id, ["head", "wrist", "instruction"]).take(ks)
        parts["head"].append(frames(t, "head", store.spec.image_size))
        parts["wrist"].append(frames(t, "wrist", store.spec.image_size))
        parts["instruction"] += t.column("instruction").to_pylist()
        parts["returns"].append(episode_returns(e.chunks, e.success, gamma)[ks])
        parts["source"] += [e.source] * len(ks)
        parts["episode"] += [e.episode_id] * len(ks)
        parts["chunk"].append(ks)
    return RealReturns(np.concatenate(parts["head"]), np.concatenate(parts["wrist"]), parts["instruction"],
                       np.concatenate(parts["returns"]), parts["source"], parts["episode"], np.concatenate(parts["chunk"]))


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC: P(a positive's score > a negative's), ties counted half; NaN without both classes."""
    score, label = np.asarray(score, np.float64), np.asarray(label, bool)
    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def value_features(policy, obs: Observations, batch: int = 64) -> np.ndarray:
    """(N, D) what the policy's value head reads for each observation (its frozen trunk features)."""
    import torch

    seen: list[torch.Tensor] = []
    hook = policy.value_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float().cpu()))
    try:
        with torch.no_grad():
            for i in range(0, len(obs.instruction), batch):
                sl = slice(i, i + batch)
                policy.logits_and_value(Observations(obs.head[sl], obs.wrist[sl], obs.proprio[sl], obs.instruction[sl]))
    finally:
        hook.remove()
    return torch.cat(seen).numpy()


def fitted_value_head(policy, rr: RealReturns, steps: int = 3000, seed: int = 0):
    """A copy of ``policy``'s value head fitted on real Monte-Carlo returns ``rr`` (``real_returns``),
    early-stopped on a fifth of their episodes: V(s) = ``head(value_features(policy, obs))``."""
    feats = value_features(policy, rr.observations(np.arange(len(rr))))
    val = episode_split(rr, seed)
    return fitted_copy(policy, feats, rr.returns, ~val, val, steps, seed)[0]


def episode_split(rr: RealReturns, seed: int = 0) -> np.ndarray:
    """(N,) bool: the rows of a seeded fifth of the episodes (validation, for early stopping)."""
    episodes = sorted(set(rr.episode))
    held = np.random.default_rng(seed).choice(episodes, size=max(1, len(episodes) // 5), replace=False)
    return np.isin(np.asarray(rr.episode), held)


def network_values(net, obs: Observations, batch: int = 128):
    """(N,) tensor: V(s) of a whole policy network (its trunk's features through its value head)."""
    import torch

    out = []
    for i in range(0, len(obs.instruction), batch):
        sl = slice(i, i + batch)
        z = net.features(net.preprocess(Observations(obs.head[sl], obs.wrist[sl], obs.proprio[sl], obs.instruction[sl])))
        out.append(net.value_head(net.value_input(z)).squeeze(-1))
    return torch.cat(out)


def fit_value_network(policy, rr: RealReturns, train: np.ndarray, val: np.ndarray, steps: int, seed: int = 0,
                      lr: float = 1e-4, batch: int = 32):
    """(a copy of ``policy`` whose trunk and value head were regressed on the ``train`` rows' returns,
    the weights with the lowest ``val`` error kept, in eval mode; the losses per step): a critic with a
    trunk of its own, trained for value (``train``, ``val``: bool masks over the rows)."""
    import copy

    import torch

    net = copy.deepcopy(policy).train()
    torch.manual_seed(seed)
    losses = regress(net, lambda rows: network_values(net, rr.observations(rows)), rr.returns, np.flatnonzero(train),
                     np.flatnonzero(val), steps, lr=lr, batch=batch, seed=seed, desc="value, trunk trained")
    return net.eval(), losses


def fitted_value_network(policy, rr: RealReturns, steps: int = 2000, seed: int = 0):
    """A copy of the whole ``policy`` fitted on real Monte-Carlo returns ``rr``, early-stopped on a
    fifth of their episodes: V(s) = ``network_values(net, obs)``."""
    val = episode_split(rr, seed)
    return fit_value_network(policy, rr, ~val, val, steps, seed)[0]


def fitted_critic_values(policy, rr: RealReturns, views: list[Observations], trunk_steps: int = 0,
                         seed: int = 0) -> dict[str, list[np.ndarray]]:
    """V of every observation of each of ``views`` (float64, one array per view) per critic fitted on
    real Monte-Carlo returns ``rr``: ``value_head``, the policy's value head on its frozen trunk
    (:func:`fitted_value_head`), and with ``trunk_steps`` ``whole_policy``, a copy of the whole policy
    fitted that many steps (:func:`fitted_value_network`)."""
    import torch

    head = fitted_value_head(policy, rr, seed=seed)
    with torch.no_grad():
        out = {"value_head": [head(torch.from_numpy(value_features(policy, obs))).squeeze(-1).numpy().astype(np.float64)
                              for obs in views]}
    if trunk_steps:
        net = fitted_value_network(policy, rr, steps=trunk_steps, seed=seed)
        with torch.no_grad():
            out["whole_policy"] = [network_values(net, obs).numpy().astype(np.float64) for obs in views]
    return out


def fitted_copy(policy, feats: np.ndarray, returns: np.ndarray, train: np.ndarray, val: np.ndarray, steps: int,
                seed: int = 0):
    """(a copy of ``policy``'s value head fitted on the ``train`` rows, early-stopped on the ``val``
    rows; the losses per step)."""
    import copy

    head = copy.deepcopy(policy.value_head)
    losses = fit_value_head(head, feats[train], returns[train], steps, seed=seed, val=(feats[val], returns[val]))
    return head, losses


def fit_value_head(head, feats: np.ndarray, targets: np.ndarray, steps: int, lr: float = 1e-3, batch: int = 64,
                   seed: int = 0, val: tuple[np.ndarray, np.ndarray] | None = None, eval_every: int = 100) -> list[float]:
    """Regress ``head`` (a module on the features) on ``targets`` in place; the losses per step. With
    ``val`` (features, targets) the weights kept are those with the lowest validation error, checked
    every ``eval_every`` steps (early stopping)."""
    import torch

    n = len(targets)
    x = torch.from_numpy(feats if val is None else np.concatenate([feats, val[0]]))
    y = np.asarray(targets if val is None else np.concatenate([targets, val[1]]), np.float32)
    return regress(head, lambda rows: head(x[rows]).squeeze(-1), y, np.arange(n),
                   None if val is None else np.arange(n, len(y)), steps, lr, batch, seed, eval_every)


def regress(module, forward, targets: np.ndarray, train: np.ndarray, val: np.ndarray | None, steps: int,
            lr: float = 1e-3, batch: int = 64, seed: int = 0, eval_every: int = 100, desc: str | None = None) -> list[float]:
    """Fit ``module`` in place (Adam, squared error) so that ``forward(rows)`` ((len(rows),) tensor)
    matches ``targets[rows]`` on minibatches drawn from the ``train`` rows; with ``val`` rows, the
    weights kept are those with the lowest error there, checked every ``eval_every`` steps and after the
    last in eval mode (early stopping). The losses per step; ``desc`` shows a progress bar."""
    import copy

    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    y = torch.from_numpy(np.asarray(targets, np.float32))
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    losses, best = [], (float("inf"), None)
    for step in tqdm(range(steps + 1), desc=desc, disable=desc is None, mininterval=5):
        if val is not None and (step % eval_every == 0 or step == steps):
            training = module.training
            module.eval()
            with torch.no_grad():
                err = float((forward(val) - y[val]).pow(2).mean())
            module.train(training)
            if err < best[0]:
                best = (err, copy.deepcopy(module.state_dict()))
        if step == steps:
            break
        idx = train[rng.integers(0, len(train), min(batch, len(train)))]
        loss = 0.5 * (forward(idx) - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if best[1] is not None:
        module.load_state_dict(best[1])
    return losses
