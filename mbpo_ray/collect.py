"""Scripted-expert demonstration episodes on real LIBERO, written to the replay store.

Plain Python: :func:`run_expert_episode` is what an env-runner Ray actor (``actors/env_runner.py``)
calls for each episode; :func:`collect_local` runs the same loop in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mbpo_ray.config import Config
from mbpo_ray.envs.libero_env import NUM_INIT_STATES, LiberoEnv
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec


@dataclass
class EpisodeResult:
    index: int
    init_state: int
    success: bool
    env_steps: int
    chunks: int
    episode_id: str | None  # None when the episode was not stored


def store_spec(cfg: Config) -> StoreSpec:
    return StoreSpec(image_size=cfg.env.image_size, chunk_size=cfg.env.chunk_size)


def episode_plan(cfg: Config) -> list[tuple[int, int]]:
    """(episode index, init state) for every episode to collect: init states cycle through 0..49."""
    first = cfg.collect.first_init_state
    return [(i, (first + i) % NUM_INIT_STATES) for i in range(cfg.collect.episodes)]


def episode_seed(cfg: Config, index: int) -> int:
    """Per-episode seed: the same episodes come out whatever the number of workers."""
    return cfg.collect.seed * 1_000_003 + index


def run_expert_episode(
    env: LiberoEnv, cfg: Config, store: ReplayStore | None, index: int, init_state: int
) -> EpisodeResult:
    """Roll the scripted expert from one init state; append the episode to ``store`` if kept."""
    from mbpo_ray.envs.expert import ScriptedExpert

    expert = ScriptedExpert(cfg.expert, np.random.default_rng(episode_seed(cfg, index)))
    obs = env.reset(init_state)
    expert.reset(env)
    builder = EpisodeBuilder(
        store_spec(cfg) if store is None else store.spec,
        suite=cfg.env.suite,
        task_id=cfg.env.task_id,
        instruction=env.instruction,
        source="demo",
    )
    done = False
    while not done:
        state = env.sim_state()
        result = env.step_chunk(expert.act)
        builder.add_chunk(obs, result.actions, result.reward, result.success, result.done, state)
        obs, done = result.obs, result.done
    batch = builder.finish(obs, env.sim_state())
    keep = store is not None and (env.success or cfg.collect.keep_failures)
    if keep:
        store.append(batch)
    return EpisodeResult(
        index=index,
        init_state=init_state,
        success=env.success,
        env_steps=env.t,
        chunks=len(builder) - 1,
        episode_id=builder.episode_id if keep else None,
    )


def collect_local(
    cfg: Config, store: ReplayStore, on_episode: Callable[[EpisodeResult], None] = lambda r: None
) -> list[EpisodeResult]:
    """All planned episodes in this process, one LIBERO env reused across them."""
    results = []
    with LiberoEnv(cfg.env, seed=cfg.collect.seed) as env:
        for index, init_state in episode_plan(cfg):
            results.append(run_expert_episode(env, cfg, store, index, init_state))
            on_episode(results[-1])
    return results
