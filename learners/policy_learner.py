"""Policy learner group: M Ray actors running token-level PPO on imagined branches, data-parallel.

Each rank takes its shard of every batch of branches and trains through the backend
``mbpo.learner_backend`` (:mod:`learners.sharding`): DDP (a whole policy per rank) or FSDP2 (1/M of
the parameters, gradients and optimizer state per rank); gloo on CPU, NCCL on GPU. Advantages are
normalised over the whole batch (all-reduced moments), so M ranks compute the same update as one.
Rank 0 publishes every new version to the weight store, where world-model workers and env runners
pull it from.

The project's learner interface is :class:`LearnerGroup` (``update_async``/``collect``, ``save``,
``fit_critic``, ``checksums``). RLlib's LearnerGroup was not used: its PPO has no chunk-level
multi-categorical distribution, standardises advantages over masked bootstrap rows, and offers DDP
only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

from learners import sharding
from learners.rendezvous import Rendezvous, join_group, node_ip, open_store
from learners.weight_channel import ChannelSender
from mbpo_ray.config import build_config
from mbpo_ray.connect import kill_actor
from mbpo_ray.placement import place_bundles
from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.rl.objectives import OBJECTIVES
from mbpo_ray.rl.ppo import PPOLoss, ppo_loss
from mbpo_ray.weights import WeightStore

POLICY = "policy"


class PolicyLearner(ChannelSender):  # rank 0 sends the policy with mbpo.weight_sync=broadcast
    def __init__(self, cfg_dict: dict, policy_dir: str, weights_uri: str, rank: int, world_size: int,
                 optimizer_state: str | None = None, store_uri: str | None = None,
                 reference_dir: str | None = None, store_parts: tuple[str, ...] | None = None):
        from mbpo_ray.policy import load_policy

        self.cfg = build_config(overrides=cfg_dict)
        mc = self.cfg.mbpo
        self.rank, self.world_size = rank, world_size
        torch.manual_seed(self.cfg.mbpo.seed)  # identical initial weights on every rank
        # Ray gives a rank with learner_gpus its own GPU(s) through CUDA_VISIBLE_DEVICES
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
        self.bf16 = mc.learner_precision == "bf16" or (mc.learner_precision == "auto" and self.device.type == "cuda")
        self.policy = load_policy(policy_dir, device=str(self.device)).train()
        self.policy.temperature = mc.policy_temperature  # score the distribution the branches came from
        self.model = self.policy  # DDP-wrapped once the ranks have joined (:meth:`join`)
        self._store = None
        self.sharded = False  # True once the ranks have joined with mbpo.learner_backend=fsdp
        self._make_optimizer()
        self._carry = None  # a name-keyed (FSDP) optimizer state, loaded once the policy is sharded
        if optimizer_state:
            saved = torch.load(optimizer_state, weights_only=False)
            if not sharding.by_name(saved):
                self.opt.load_state_dict(saved)
            elif world_size > 1 and mc.learner_backend == "fsdp":
                self._carry = saved
            else:
                sharding.load_optimizer(self.policy, self.opt, saved)
        self.weights = WeightStore(weights_uri)
        # the run's starting policy (not a resumed checkpoint), frozen: the anchor of mbpo.kl_coef
        reference = reference_dir or policy_dir
        self.reference = load_policy(reference, device=str(self.device)).eval().requires_grad_(False) \
            if mc.kl_coef else None
        if self.reference is not None:
            self.reference.temperature = mc.policy_temperature
        self.real = None  # real Monte-Carlo returns for the critic (mbpo.critic_fit_steps, critic_real_coef)
        if store_uri and (mc.critic_fit_steps or mc.critic_real_coef) and mc.objective == "ppo":
            from mbpo_ray.rl.critic import real_returns

            self.real = real_returns(store_uri, mc.gamma, mc.task_ids, seed=mc.seed, parts=store_parts)
        self._real_rng = np.random.default_rng([mc.seed, rank])  # re-seeded from every update's seed
        self.imitation = _imitation(self.cfg, store_uri, reference, rank, self.policy.cfg.image_size) \
            if mc.objective == "bc" else None
        if self.imitation is not None and optimizer_state:  # a resumed run's successes so far
            self.imitation.load(os.path.dirname(optimizer_state))

    def open_rendezvous(self) -> Rendezvous:
        """Rank 0: the group's store on this rank's node; what the other ranks join with."""
        self._store, rdv = open_store(self.world_size)
        return rdv

    def _make_optimizer(self) -> None:
        """AdamW with the actor's and the critic's learning rates (built again once FSDP has replaced
        the parameters by their shards)."""
        critic = [p for n, p in self.policy.named_parameters() if n.startswith("value_head.")]
        ids = {id(p) for p in critic}
        self.actor_params = [p for p in self.policy.parameters() if id(p) not in ids]
        mc = self.cfg.mbpo
        self.opt = torch.optim.AdamW([{"params": self.actor_params, "lr": mc.actor_lr},
                                      {"params": critic, "lr": mc.critic_lr}], weight_decay=0.0)

    def join(self, rdv: Rendezvous) -> str:
        """Join the process group (gloo on CPU, NCCL on GPU) and wrap the policy for the backend
        (``mbpo.learner_backend``: DDP, or sharded in place by FSDP2, the optimizer state carried
        into the shards); returns the address of this rank's node."""
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        join_group(rdv, self.rank, backend, self._store)
        fsdp = self.cfg.mbpo.learner_backend == "fsdp"
        carry = self._carry
        if fsdp and carry is None and self.opt.state:  # a DDP checkpoint's state, by parameter name
            carry = sharding.name_keyed(self.policy, self.opt)
        self.model = sharding.wrap(self.policy, self.cfg.mbpo.learner_backend)
        if fsdp:
            self.sharded = True
            self._make_optimizer()
            if carry is not None:
                sharding.load_optimizer(self.policy, self.opt, carry)
            self._carry = None
        return node_ip()

    def node(self) -> str:
        return node_ip()

    def send_weights(self, version: int) -> float:
        """Rank 0 broadcasts the policy as ``version`` to the receivers (every rank calls: sharded
        weights are gathered first); returns the seconds it took."""
        t0 = time.perf_counter()
        state = sharding.full_state(self.policy, self.sharded)
        if self.rank == 0:
            self.channel.send(state, version)
        return time.perf_counter() - t0

    def _allreduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, on the CPU (NCCL reduces on the GPU)."""
        if self.world_size > 1:
            import torch.distributed as dist

            on = x.to(self.device)
            dist.all_reduce(on)
            return on.cpu()
        return x

    def update(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> dict:
        """Steps of the configured objective on this rank's shard; returns the rank's metrics. Rank 0
        publishes ``version``.

        ``seed`` (from the driver's checkpointed generator) draws the minibatches: a resumed run
        repeats the updates of an uninterrupted one. Every rank takes part in every step (DDP's
        all-reduce); a rank with nothing to train on joins with a zero-weighted sample, and each step's
        loss is the mean over every rank's samples. The updates of a batch stop early once the
        chunk-level approximate KL to the behaviour policy passes ``mbpo.target_kl``."""
        mc = self.cfg.mbpo
        if self.imitation is not None:
            return self.imitation.update(self, br, version, seed)
        rng = np.random.default_rng(seed)
        self._real_rng = np.random.default_rng([seed, self.rank])  # each rank its own real minibatches
        t0 = time.perf_counter()
        tg = OBJECTIVES[mc.objective](br, mc, self._allreduce, seed)
        critic_only = critic_only and tg.returns is not None  # an objective without a critic has no warm-up
        n = len(tg.advantages)
        m = min(mc.minibatch_size, n)
        counts = self._allreduce(torch.tensor([float(n), float(m)], dtype=torch.float64))
        stats: dict[str, list[float]] = {}
        done, ret = 0, None
        if counts[0] > 0:
            mask = tg.mask.copy()
            if not n:  # nothing here: the first step of the first branch (always taken), weight 0
                mask[0, 0] = True
            steps = _Steps(br, mask)
            old = torch.from_numpy(br.token_log_prob[mask])
            adv = tg.advantages if n else torch.zeros(1)
            ret = tg.returns if tg.returns is not None and n else None
            scale = self.world_size * m / float(counts[1]) if n else 0.0
            for _ in range(mc.updates_per_batch):
                idx = rng.choice(len(adv), size=max(m, 1), replace=False)
                sl = self._losses(steps, idx, old[idx], adv[idx], None if ret is None else ret[idx])
                out, chunk_kl = sl.ppo, sl.chunk_kl
                loss = mc.value_coef * sl.critic if critic_only else out.loss + mc.kl_coef * sl.kl_ref
                self._step(loss * scale, freeze_actor=critic_only)
                done += 1
                if n:
                    for k in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                        stats.setdefault(k, []).append(float(getattr(out, k).detach()))
                    stats.setdefault("kl_ref", []).append(float(sl.kl_ref.detach()))
                    stats.setdefault("chunk_kl", []).append(chunk_kl)
                mean_kl = self._allreduce(torch.tensor([chunk_kl * m, float(m)], dtype=torch.float64))
                if mc.target_kl and not critic_only and mean_kl[0] / mean_kl[1].clamp_min(1) > mc.target_kl:
                    break  # the same decision on every rank
        metrics = {k: float(np.mean(x)) for k, x in stats.items()}
        metrics.update({"return_mean": float(ret.mean()) if ret is not None else 0.0, **tg.stats,
                        "samples": n, "trained": done * m, "updates": done})
        return self._publish(version, metrics, t0)

    def add_successes(self, br: Branches) -> int:
        """Keep the successful episodes of a real batch (``mbpo.mode=mbpo``'s real data) in the cloning
        buffer, as they are (the null control shuffles imagined outcomes only); the rows kept."""
        return 0 if self.imitation is None else self.imitation.keep(br)

    def _losses(self, steps: _Steps, idx: np.ndarray, old: torch.Tensor, adv: torch.Tensor,
                ret: torch.Tensor | None) -> _StepLoss:
        """The clipped surrogate (+ value loss where ``ret`` is given) on one minibatch, the KL to
        the starting policy (k3 per action token, with grad) and the chunk-level approximate KL to the
        behaviour policy (k3 summed over a chunk's tokens, mean over the minibatch)."""
        mc = self.cfg.mbpo
        mine, actions = steps.observations(idx), steps.actions[idx]
        b = len(idx)
        obs, acts = mine, actions
        real = self._real_minibatch(b) if ret is not None and mc.critic_real_coef else None
        if real is not None:  # real Monte-Carlo targets ride in the same forward pass (one DDP forward per step)
            obs, acts = _cat(mine, real[0]), torch.cat([actions, torch.zeros_like(actions[: len(real[1])])])
        logp, ent, value = self._forward(obs, acts)
        logp, ent = logp[:b].reshape(b, -1), ent[:b].reshape(b, -1)
        dev = logp.device
        old, adv = old.to(dev), adv.to(dev)
        ret = None if ret is None else ret.to(dev)
        real_loss = torch.zeros((), device=dev)
        if real is not None:
            value, real_loss = value[:b], 0.5 * (value[b:] - real[1].to(dev)).pow(2).mean()
        out = ppo_loss(logp, old.reshape(b, -1), adv, value, value.detach() if ret is None else ret, ent,
                       mc.clip, mc.value_coef if ret is not None else 0.0, mc.entropy_coef)
        kl_ref = torch.zeros((), device=dev)
        if mc.kl_coef:
            with torch.no_grad():
                ref = self.reference.evaluate(mine, actions, None, True)[0].reshape(b, -1)
            d = ref - logp
            kl_ref = (d.exp() - d - 1).mean()
        with torch.no_grad():
            r = logp.detach() - old.reshape(b, -1)
            chunk_kl = float(((r.exp() - 1) - r).sum(1).mean())
        critic = 0.5 * (value - (value.detach() if ret is None else ret)).pow(2).mean() + mc.critic_real_coef * real_loss
        if real is not None:
            out.loss = out.loss + mc.value_coef * mc.critic_real_coef * real_loss
        return _StepLoss(out, kl_ref, critic, chunk_kl)

    def _forward(self, obs: Observations, actions: torch.Tensor, mask: torch.Tensor | None = None):
        """Per-token log-probs and entropies (0 at steps ``mask`` marks invalid) and the value, through
        the backend, in bfloat16 where ``mbpo.learner_precision`` says so (log-probs are computed in
        float32 either way)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logp, ent, value = self.model(obs, actions, mask, True)
        return logp, ent, value.float()

    def _real_minibatch(self, n: int):
        """(observations, Monte-Carlo returns) of ``n`` stored real chunk boundaries, or None."""
        if self.real is None:
            return None
        idx = self._real_rng.choice(len(self.real), size=min(n, len(self.real)), replace=False)
        return self.real.observations(idx), torch.from_numpy(self.real.returns[idx])

    def fit_critic(self, steps: int, version: int, seed: int) -> dict:
        """Value-head regression on the real Monte-Carlo returns (the actor stays as it is); rank 0
        publishes the result as ``version``."""
        if self.real is None or not steps:
            return {}
        t0 = time.perf_counter()
        self._real_rng = np.random.default_rng([seed, self.rank])
        losses = []
        for _ in range(steps):
            obs, target = self._real_minibatch(self.cfg.mbpo.minibatch_size)
            value = self._forward(obs, torch.zeros(len(target), self.policy.bins.chunk_size, 7))[2]
            loss = 0.5 * (value - target.to(value.device)).pow(2).mean()
            self._step(loss, freeze_actor=True)
            losses.append(float(loss.detach()))
        k = max(1, steps // 10)
        return self._publish(version, {"critic_fit/loss_first": float(np.mean(losses[:k])),
                                       "critic_fit/loss_last": float(np.mean(losses[-k:])), "samples": len(self.real),
                                       "critic_fit/return_mean": float(self.real.returns.mean())}, t0)

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
        state = sharding.full_state(self.policy, self.sharded)  # a collective when sharded
        if self.rank == 0:
            self.weights.publish(POLICY, state, version)
        metrics.update(publish_s=time.perf_counter() - t_pub, seconds=time.perf_counter() - t0,
                       peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return metrics

    def save(self, path: str, extra: dict | None = None, optimizer: bool = True) -> str:
        """Policy checkpoint folder (loadable by ``load_policy``) + optimizer state (to resume; a policy
        handed to env runners needs none). Every rank calls it (sharded weights are gathered); rank 0
        writes."""
        from mbpo_ray.policy import save_policy

        state = sharding.full_state(self.policy, self.sharded)
        opt = sharding.optimizer_state(self.policy, self.opt, self.sharded) if optimizer else None
        if self.rank == 0:
            save_policy(self.policy, path, extra, state=state)
            if opt is not None:
                torch.save(opt, os.path.join(path, "optimizer.pt"))
        if optimizer and self.imitation is not None:  # every rank its own successes
            self.imitation.save(path)
        return path

    def weights_checksum(self) -> float:
        """Sum of the weights: DDP replicas must agree; sharded ranks sum their shards together."""
        local = sum(_local(p).detach().double().sum() for p in self.policy.parameters())
        return float(self._allreduce(torch.as_tensor(local, dtype=torch.float64).reshape(1))) if self.sharded \
            else float(local)


class LearnerGroup:
    """M :class:`PolicyLearner` ranks on a Ray cluster; ``update`` shards a batch across them.

    The ranks are the bundles of one placement group (``placement``: Ray's PACK, SPREAD,
    STRICT_PACK or STRICT_SPREAD; ``resources``: custom node resources each rank needs, to pin ranks
    to a kind of node), so they are placed together or not at all; they then meet through rank 0's
    store on rank 0's node (:mod:`learners.rendezvous`), on one node or many."""

    def __init__(self, cfg_dict: dict, policy_dir: str, weights_uri: str, n: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, optimizer_state: str | None = None, store_uri: str | None = None,
                 reference_dir: str | None = None, store_parts: tuple[str, ...] | None = None,
                 resources: dict[str, float] | None = None, placement: str = "pack",
                 place_timeout_s: float | None = None):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        custom = dict(resources or {})
        env = {"OMP_NUM_THREADS": str(max(1, int(num_cpus)))}
        self.pg = place_bundles(n, {"CPU": num_cpus, "GPU": num_gpus, **custom}, placement, place_timeout_s)
        self.ranks = []
        for r in range(n):
            cls = ray.remote(PolicyLearner).options(
                num_cpus=num_cpus, num_gpus=num_gpus, resources=custom, runtime_env={"env_vars": env},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=r))
            self.ranks.append(cls.remote(cfg_dict, policy_dir, weights_uri, r, n, optimizer_state, store_uri,
                                         reference_dir, store_parts))
        try:
            if n > 1:
                rdv = ray.get(self.ranks[0].open_rendezvous.remote())
                self.nodes = self.gather([r.join.remote(rdv) for r in self.ranks])
            else:
                self.nodes = [ray.get(self.ranks[0].node.remote())]
        except BaseException:
            self.close()
            raise

    def update_async(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> list:
        """Start an update on every rank (each gets its shard); :meth:`collect` waits for it."""
        shards = _split(br, len(self.ranks))
        return [r.update.remote(s, version, seed, critic_only) for r, s in zip(self.ranks, shards, strict=True)]

    def collect(self, refs: list) -> dict:
        """Counts summed, times the slowest rank's, other metrics averaged over the ranks that report
        them, weighted by their samples."""
        results = self.gather(refs)
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

    def gather(self, refs: list) -> list:
        """Every rank's result; when one rank fails the others would wait in a collective for ever:
        the whole group is killed and the error raised at once."""
        pending, done = list(refs), {}
        while pending:
            [ready], pending = ray.wait(pending, num_returns=1)
            try:
                done[ready] = ray.get(ready)
            except Exception:
                self.close()
                raise
        return [done[r] for r in refs]

    def update(self, br: Branches, version: int, seed: int, critic_only: bool = False) -> dict:
        return self.collect(self.update_async(br, version, seed, critic_only))

    def add_successes(self, br: Branches) -> int:
        """Every rank keeps the successes of its shard of ``br`` (real episodes) for cloning; rows kept."""
        return sum(self.gather([r.add_successes.remote(s) for r, s in zip(self.ranks, _split(br, len(self.ranks)),
                                                                          strict=True)]))

    def save(self, path: str, extra: dict | None = None, optimizer: bool = True) -> str:
        return self.gather([r.save.remote(path, extra, optimizer) for r in self.ranks])[0]

    def __enter__(self) -> LearnerGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # a placement group outlives the handles of its actors: free the ranks' reservation when the
        # group goes away, as the actors' own would be
        if getattr(self, "pg", None) is not None and ray.is_initialized():
            self.close()

    def close(self) -> None:
        """Kill the ranks and give their placement group's reservation back."""
        for r in self.ranks:
            kill_actor(r)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                ray.util.remove_placement_group(self.pg)
            self.pg = None

    def fit_critic(self, steps: int, version: int, seed: int) -> dict:
        """Every rank fits the critic on real returns (DDP keeps them identical); rank 0's metrics."""
        return self.gather([r.fit_critic.remote(steps, version, seed) for r in self.ranks])[0]

    def checksums(self) -> list[float]:
        return ray.get([r.weights_checksum.remote() for r in self.ranks])


@dataclass
class _StepLoss:
    ppo: PPOLoss  # the clipped surrogate (+ value loss where the objective trains a critic)
    kl_ref: torch.Tensor  # KL to the starting policy, k3 per action token, with grad
    critic: torch.Tensor  # the value loss alone, with grad (critic warm-up)
    chunk_kl: float  # approximate KL to the behaviour policy, summed over a chunk's tokens


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


_SUMMED, _SLOWEST = ("samples", "trained", "success_branches", "buffer_rows"), ("seconds", "publish_s", "peak_rss_mb")


def _imitation(cfg, store_uri: str | None, reference: str, rank: int, size: int):
    """``mbpo.objective=bc``'s state on one rank: the starting policy's demonstrations when anchored."""
    from learners.imitation import Imitation, demonstration_rows

    mc = cfg.mbpo
    demos = demonstration_rows(store_uri, reference, mc.task_ids, size) if mc.bc_demo_coef else None
    return Imitation(mc, size, cfg.sft.augment, demos, rank)


def _cat(a: Observations, b: Observations) -> Observations:
    """One batch of both; ``b``'s frames resized to ``a``'s (real frames at the store's size next to
    imagined ones at the tokenizer's)."""
    from mbpo_ray.policy.base import resize_uint8

    size = a.head.shape[1]
    fit = (lambda x: x) if b.head.shape[1] == size else (lambda x: resize_uint8(x, size).numpy())  # noqa: E731
    return Observations(np.concatenate([a.head, fit(b.head)]), np.concatenate([a.wrist, fit(b.wrist)]),
                        np.concatenate([a.proprio, b.proprio]), [*a.instruction, *b.instruction])


def _split(br: Branches, n: int) -> list[Branches]:
    """n shards of whole groups (branches of one start state stay together: group-relative
    advantages need them), as equal in size as possible."""
    firsts = np.flatnonzero(np.r_[True, br.group[1:] != br.group[:-1]])  # where each group begins
    cut = np.linspace(0, len(firsts), n + 1).astype(int)
    bounds = np.r_[firsts, len(br)][cut]
    return [br.take(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter (its shard when FSDP made it a DTensor)."""
    return p.to_local() if hasattr(p, "to_local") else p
