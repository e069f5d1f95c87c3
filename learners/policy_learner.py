"""Policy learner group: M Ray actors running token-level PPO on imagined branches, data-parallel.

Each rank holds the policy wrapped in torch DDP (gloo on CPU, NCCL on GPU) and takes its shard of
every batch of branches; advantages are normalised over the whole batch (all-reduced moments), so
M ranks compute the same update as one. Rank 0 publishes every new version to the weight store,
where world-model workers and env runners pull it from.

The project's learner interface is :class:`LearnerGroup` (``update``, ``save``, ``state``); this
backend is DDP. A sharded backend for multi-billion-parameter VLAs (FSDP) implements the same three
calls. RLlib's LearnerGroup was not used: its PPO has no chunk-level multi-categorical
distribution, standardises advantages over masked bootstrap rows, and offers DDP only.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import ray
import torch

from mbpo_ray.config import build_config
from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.rl.ppo import gae, ppo_loss
from mbpo_ray.weights import WeightStore

POLICY = "policy"


class PolicyLearner:
    def __init__(self, cfg_dict: dict, policy_dir: str, weights_uri: str, rank: int, world_size: int,
                 init_method: str | None, optimizer_state: str | None = None):
        import torch.distributed as dist

        from mbpo_ray.policy import load_policy

        self.cfg = build_config(overrides=cfg_dict)
        self.rank, self.world_size = rank, world_size
        torch.manual_seed(self.cfg.mbpo.seed)  # identical initial weights on every rank
        self.policy = load_policy(policy_dir).train()
        self.model = self.policy
        if world_size > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
            self.model = torch.nn.parallel.DistributedDataParallel(self.policy, find_unused_parameters=True)
        critic = [p for n, p in self.policy.named_parameters() if n.startswith("value_head.")]
        ids = {id(p) for p in critic}
        actor = [p for p in self.policy.parameters() if id(p) not in ids]
        self.actor_params = actor
        mc = self.cfg.mbpo
        self.opt = torch.optim.AdamW([{"params": actor, "lr": mc.actor_lr}, {"params": critic, "lr": mc.critic_lr}],
                                     weight_decay=0.0)
        if optimizer_state:
            self.opt.load_state_dict(torch.load(optimizer_state, weights_only=False))
        self.weights = WeightStore(weights_uri)

    def _allreduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(x)
        return x

    def update(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> dict:
        """PPO steps on this rank's shard; returns the rank's metrics. Rank 0 publishes ``version``.

        ``seed`` (from the driver's checkpointed generator) draws the minibatches: a resumed run
        repeats the updates of an uninterrupted one."""
        mc = self.cfg.mbpo
        if mc.objective == "bc":
            return self._imitate(br, version, seed)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        f = torch.from_numpy
        adv, ret = gae(f(br.reward), f(br.value), f(br.terminal), f(br.valid), f(br.last_value), mc.gamma, mc.lam)
        v = br.valid
        adv, ret = adv[f(v)], ret[f(v)]
        # advantage moments over every rank's valid steps
        moments = self._allreduce(torch.stack([adv.sum(), (adv**2).sum(), torch.tensor(float(len(adv)))]).double())
        mean = moments[0] / moments[2]
        std = (moments[1] / moments[2] - mean**2).clamp_min(1e-12).sqrt()
        adv = ((adv - mean) / (std + 1e-8)).float()
        steps = _Steps(br, v)
        old = f(br.token_log_prob[v])
        n = len(adv)
        stats: dict[str, list[float]] = {}
        for _ in range(mc.updates_per_batch):
            idx = rng.choice(n, size=min(mc.minibatch_size, n), replace=False)
            logp, ent, value = self.model(steps.observations(idx), steps.actions[idx], None, True)
            out = ppo_loss(logp.reshape(len(idx), -1), old[idx].reshape(len(idx), -1), adv[idx], value, ret[idx],
                           ent.reshape(len(idx), -1), mc.clip, mc.value_coef, mc.entropy_coef)
            loss = mc.value_coef * 0.5 * (value - ret[idx]).pow(2).mean() if critic_only else out.loss
            # the shared trunk stays as SFT left it while the critic catches up
            self._step(loss, freeze_actor=critic_only)
            for k in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                stats.setdefault(k, []).append(float(getattr(out, k)))
        metrics = {k: float(np.mean(x)) for k, x in stats.items()}
        metrics.update(samples=n, trained=mc.updates_per_batch * min(mc.minibatch_size, n),
                       advantage_mean=float(mean), return_mean=float(ret.mean()) if n else 0.0)
        return self._publish(version, metrics, t0)

    def _imitate(self, br: Branches, version: int, seed: int) -> dict:
        """Behaviour cloning inside the world model (the paper's "BC (world model)" baseline): the
        policy maximises the likelihood of its own imagined chunks on the branches the world model
        judged successful; no critic, no advantages. Branches without a predicted success teach
        nothing, and the critic warm-up does not apply. Every rank takes part in every step (DDP's
        all-reduce); a rank whose shard holds no success contributes a zero-weighted sample, and the
        loss is the mean over all ranks' samples."""
        mc = self.cfg.mbpo
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        keep = br.valid & br.terminal.any(axis=1, keepdims=True)
        n = int(keep.sum())
        m = min(mc.minibatch_size, n)
        counts = self._allreduce(torch.tensor([float(n), float(m)], dtype=torch.float64))
        stats: dict[str, list[float]] = {}
        if counts[0] > 0:  # the same decision on every rank
            rows = keep.copy()
            if not n:  # no success in this shard: the first step of the first branch (always taken), weight 0
                rows[0, 0] = True
            steps = _Steps(br, rows)
            # DDP averages gradients over ranks: scale so the result is the mean over every rank's samples
            scale = self.world_size / float(counts[1]) if n else 0.0
            for _ in range(mc.updates_per_batch):
                idx = rng.choice(len(steps.actions), size=max(m, 1), replace=False)
                logp, ent, _ = self.model(steps.observations(idx), steps.actions[idx], None, True)
                self._step(-logp.sum() * scale / logp[0].numel())
                if n:
                    stats.setdefault("loss", []).append(-float(logp.detach().mean()))
                    stats.setdefault("entropy", []).append(float(ent.detach().mean()))
        metrics = {k: float(np.mean(x)) for k, x in stats.items()}
        metrics.update(samples=n, trained=mc.updates_per_batch * m if counts[0] > 0 else 0,
                       success_branches=int(br.terminal.any(axis=1).sum()))
        return self._publish(version, metrics, t0)

    def _step(self, loss: torch.Tensor, freeze_actor: bool = False) -> None:
        """One optimizer step on ``loss`` (gradients clipped to norm 1); ``freeze_actor`` drops the
        actor's gradients so only the critic moves."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if freeze_actor:
            for p in self.actor_params:
                p.grad = None
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        self.opt.step()

    def _publish(self, version: int, metrics: dict, t0: float) -> dict:
        """Rank 0 publishes ``version`` to the weight store; the update's timings join its metrics."""
        t_pub = time.perf_counter()
        if self.rank == 0:
            self.weights.publish(POLICY, self.policy.state_dict(), version)
        metrics.update(publish_s=time.perf_counter() - t_pub, seconds=time.perf_counter() - t0)
        return metrics

    def save(self, path: str, extra: dict | None = None) -> str:
        """Rank 0: policy checkpoint folder (loadable by ``load_policy``) + optimizer state."""
        from mbpo_ray.policy import save_policy

        save_policy(self.policy, path, extra)
        torch.save(self.opt.state_dict(), os.path.join(path, "optimizer.pt"))
        return path

    def weights_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.policy.parameters()))


class LearnerGroup:
    """M :class:`PolicyLearner` ranks on a Ray cluster; ``update`` shards a batch across them."""

    def __init__(self, cfg_dict: dict, policy_dir: str, weights_uri: str, n: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, optimizer_state: str | None = None):
        init = f"tcp://127.0.0.1:{_free_port()}" if n > 1 else None
        env = {"OMP_NUM_THREADS": str(max(1, int(num_cpus))), "GLOO_SOCKET_IFNAME": "lo"}
        cls = ray.remote(PolicyLearner).options(num_cpus=num_cpus, num_gpus=num_gpus,
                                                runtime_env={"env_vars": env})
        self.ranks = [cls.remote(cfg_dict, policy_dir, weights_uri, r, n, init, optimizer_state) for r in range(n)]

    def update_async(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> list:
        """Start an update on every rank (each gets its shard); :meth:`collect` waits for it."""
        shards = _split(br, len(self.ranks))
        return [r.update.remote(s, version, seed, critic_only) for r, s in zip(self.ranks, shards, strict=True)]

    def collect(self, refs: list) -> dict:
        """Counts summed, times the slowest rank's, other metrics averaged over the ranks that report
        them, weighted by their samples."""
        results = ray.get(refs)
        out = {}
        for k in dict.fromkeys(k for m in results for k in m):
            have = [m for m in results if k in m]
            if k in _SUMMED:
                out[k] = sum(m[k] for m in have)
            elif k in _SLOWEST:
                out[k] = max(m[k] for m in have)
            else:
                out[k] = float(np.average([m[k] for m in have], weights=[max(1, m["samples"]) for m in have]))
        return out

    def update(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> dict:
        return self.collect(self.update_async(br, version, seed, critic_only))

    def save(self, path: str, extra: dict | None = None) -> str:
        return ray.get(self.ranks[0].save.remote(path, extra))

    def checksums(self) -> list[float]:
        return ray.get([r.weights_checksum.remote() for r in self.ranks])


class _Steps:
    """The chunk steps a (B, n) mask selects from a batch of branches, as minibatches of
    observations (imagined steps carry no proprio) and the actions taken."""

    def __init__(self, br: Branches, mask: np.ndarray):
        self.head, self.wrist = br.head[mask], br.wrist[mask]
        self.instruction = np.array(br.instruction, dtype=object)[np.nonzero(mask)[0]]
        self.actions = torch.from_numpy(br.actions[mask])

    def observations(self, idx: np.ndarray) -> Observations:
        return Observations(self.head[idx], self.wrist[idx], np.zeros((len(idx), 8), np.float32),
                            list(self.instruction[idx]))


_SUMMED, _SLOWEST = ("samples", "trained", "success_branches"), ("seconds", "publish_s")


def _split(br: Branches, n: int) -> list[Branches]:
    """n shards of whole branches, as equal in size as possible."""
    bounds = np.linspace(0, len(br), n + 1).astype(int)
    return [br.take(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
