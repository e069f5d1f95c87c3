"""World-model worker: a served world model (vLLM by default) plus a copy of the current policy.

``imagine(ImagineRequest)`` draws ``n`` start states from the shared replay store itself (only
the drawn rows are read: the store is never copied into the worker), then runs branched imagined
rollouts with every live branch batched into each engine call. Before each call the worker pulls
the policy and world-model weights the request names (or the newest) from the versioned weight
store, so a replica that joins late or restarts comes up on them without anything being pushed to it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from mbpo_ray.config import build_config
from mbpo_ray.protocol import ImagineRequest, ImagineResult, Versions
from mbpo_ray.replay import ReplayStore, frames
from mbpo_ray.weights import WeightStore

POLICY, WORLD_MODEL = "policy", "world_model"


class WorldModelWorker:
    def __init__(self, cfg_dict: dict, world_model_dir: str, policy_dir: str, store_uri: str, weights_uri: str):
        from mbpo_ray.policy import load_policy
        from mbpo_ray.world_model.evaluate import WorldModel

        self.cfg = build_config(overrides=cfg_dict)
        self.store = ReplayStore.open(store_uri)
        self.weights = WeightStore(weights_uri)
        self.policy = load_policy(policy_dir)
        self.policy.temperature = self.cfg.mbpo.policy_temperature
        wc = self.cfg.world_model
        gpu = wc.engine == "vllm" and _cuda()
        self.wm = WorldModel(world_model_dir, engine=wc.engine, reward=wc.reward_source, keep_pixels=wc.keep_pixels,
                             **({"gpu_memory_utilization": wc.gpu_memory_utilization} if gpu else {}))
        self.policy_version = 0  # the starting weights; a call loads the versions it names (or the newest)
        self.sync_seconds = 0.0

    def sync(self, want: Versions | None = None) -> Versions:
        """Hold exactly the versions ``want`` names, or the newest published ones when None."""
        t0 = time.perf_counter()
        v = self.weights.latest(POLICY) if want is None else want.policy
        if v != self.policy_version:
            if v <= 0:
                raise ValueError(f"policy version {v} asked for, but this replica holds {self.policy_version}")
            state, self.policy_version = self.weights.load(POLICY, v)
            self.policy.load_state_dict(state)
        w = self.weights.latest(WORLD_MODEL) if want is None else want.world_model
        if w != self.wm.engine.version:  # engines only move forward
            state, w = self.weights.load(WORLD_MODEL, w)
            self.wm.engine.update_weights(state, w)
        self.sync_seconds = time.perf_counter() - t0
        return Versions(self.policy_version, self.wm.engine.version)

    def join_channel(self, addr, rank: int, name: str) -> None:
        """Join a weight-broadcast group (``mbpo.weight_sync=broadcast``) for ``name`` (policy, or
        world_model from the world-model learner) as ``rank``."""
        from learners.weight_channel import WeightChannel

        self.channels = {**getattr(self, "channels", {}), name: WeightChannel(addr, rank)}

    def receive_weights(self, name: str, version: int) -> float:
        """The version of ``name`` its sender broadcasts now: into this replica's policy copy, or into
        its running world-model engine; seconds taken."""
        t0 = time.perf_counter()
        state = self.channels[name].receive(version)
        if name == POLICY:
            self.policy.load_state_dict(state)
            self.policy_version = version
        else:
            self.wm.engine.update_weights(state, version)
        return time.perf_counter() - t0

    def _start_episodes(self, parts: tuple[str, ...] | None) -> tuple[np.ndarray, list]:
        """(store indices, metadata) of the episodes start states may come from."""
        self.store.refresh()
        episodes = self.store.episodes
        if parts is None:
            return np.arange(len(episodes)), episodes
        index = self.store.episodes_in(parts)
        return index, [episodes[i] for i in index]

    def imagine(self, req: ImagineRequest) -> ImagineResult:
        """``req.n`` branches of ``mbpo.n_chunks`` chunks: ``n / mbpo.group_size`` start states drawn
        with ``req.seed`` by ``mbpo.start_sampler`` (an equal share per task), each branched
        ``group_size`` times, on the weights and store parts the request names. The store is refreshed
        first, so real episodes appended during the run become start states."""
        from mbpo_ray.replay.samplers import chunks_to_go, draw_groups, start_ids
        from mbpo_ray.rl.imagine import imagine

        versions = self.sync(req.versions)
        t0 = time.perf_counter()
        index, episodes = self._start_episodes(req.parts)
        mc = self.cfg.mbpo
        ep, chunk, group = draw_groups(episodes, req.n, req.tasks or [], np.random.default_rng(req.seed),
                                       req.iteration, mc)
        table = self.store.read_start_states(index[ep], chunk, ["head", "wrist", "instruction"])
        size = self.store.spec.image_size
        head, wrist = frames(table, "head", size), frames(table, "wrist", size)
        instr = table.column("instruction").to_pylist()
        br = imagine(self.wm, self.policy, head, wrist, instr, mc.n_chunks, mc.temperature, req.seed, group=group,
                     max_uncertainty=mc.max_uncertainty)
        br.start_ids, br.to_go = start_ids(episodes, ep, chunk), chunks_to_go(episodes, ep, chunk)
        br.policy_version, br.world_model_version = versions.policy, versions.world_model
        return ImagineResult(br, time.perf_counter() - t0, self.sync_seconds, os.getpid(), versions,
                             ray.util.get_node_ip_address())

    def pid(self) -> int:
        return os.getpid()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def world_model_worker_class(num_cpus: float = 1.0, num_gpus: float = 0.0, env_vars: dict | None = None,
                             resources: dict[str, float] | None = None):
    """The Ray actor class with its resource request (GPU replicas on a cluster, CPU here)."""
    threads = str(max(1, int(num_cpus)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **(env_vars or {})}
    if not num_gpus:  # vLLM's CPU backend would pin every replica to the same cores: let the OS place them
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    # max_restarts=0: the pool replaces a dead replica; Ray must not restart it as well
    return ray.remote(WorldModelWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0,
                                                 resources=dict(resources or {}), runtime_env={"env_vars": env})
