"""Env-runner actor: one real LIBERO environment per actor, episodes written straight to the store.

The store is append-safe for many writers, so episodes never travel through the driver; each call
returns only a small summary.
"""

from __future__ import annotations

import dataclasses
import os

import ray

from mbpo_ray.collect import run_expert_episode
from mbpo_ray.config import build_config
from mbpo_ray.envs.libero_env import LiberoEnv
from mbpo_ray.replay import ReplayStore


class EnvRunner:
    """Holds one LiberoEnv for one task; build with :func:`make_env_runners`."""

    def __init__(self, cfg_dict: dict, store_uri: str):
        self.cfg = build_config(overrides=cfg_dict)
        self.store = ReplayStore.open(store_uri)
        self.env = LiberoEnv(self.cfg.env, seed=self.cfg.collect.seed)

    def expert_episode(self, index: int, init_state: int) -> dict:
        return dataclasses.asdict(run_expert_episode(self.env, self.cfg, self.store, index, init_state))

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.env.close()


def make_env_runners(cfg_dict: dict, store_uri: str, n: int, num_cpus: float = 1.0) -> list:
    """``n`` env-runner actors; rendering backend and thread counts pinned per process."""
    env_vars = {
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", cfg_dict["env"]["renderer"]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    remote = ray.remote(EnvRunner).options(num_cpus=num_cpus, runtime_env={"env_vars": env_vars})
    return [remote.remote(cfg_dict, store_uri) for _ in range(n)]
