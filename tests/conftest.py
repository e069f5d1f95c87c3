"""Shared fixtures: a real local Ray cluster (session scope) and tiny replay data made on the fly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mbpo_ray.connect import local_ray, use_loopback

use_loopback()  # before test modules import ray while they are collected
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from mbpo_ray.envs.libero_env import Observation  # noqa: E402
from mbpo_ray.replay import EpisodeBuilder, StoreSpec  # noqa: E402

TINY = StoreSpec(image_size=16, chunk_size=4)


def random_obs(rng: np.random.Generator, spec: StoreSpec = TINY) -> Observation:
    s = spec.image_size
    return Observation(
        head=rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
        wrist=rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
        proprio=rng.standard_normal(spec.proprio_dim).astype(np.float32),
    )


def random_episode(rng: np.random.Generator, spec: StoreSpec = TINY, chunks: int = 3, task_id: int = 0,
                   success: bool = True, source: str = "demo"):
    """An episode batch with random frames; returns (batch, the observations and actions used)."""
    b = EpisodeBuilder(spec, suite="libero_spatial", task_id=task_id, instruction=f"task {task_id}",
                       source=source)
    obs, acts = [], []
    for c in range(chunks):
        o, a = random_obs(rng, spec), rng.uniform(-1, 1, (spec.chunk_size, spec.action_dim)).astype(np.float32)
        last = c == chunks - 1
        b.add_chunk(o, a, reward=float(last and success), success=last and success, done=last,
                    sim_state=rng.standard_normal(5))
        obs.append(o)
        acts.append(a)
    final = random_obs(rng, spec)
    obs.append(final)
    return b.finish(final), obs, acts


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with small CPU reservations, shared by the whole session."""
    import ray

    local_ray(2)
    yield ray
    ray.shutdown()


def alive_actors(class_names: set[str]) -> list[str]:
    """Class names of the actors of these classes on the connected cluster that are not dead (alive,
    or still being created), from the GCS actor table: no dashboard needed."""
    from ray._private.state import actors

    return sorted(a["ActorClassName"] for a in actors().values()
                  if a["State"] != "DEAD" and a["ActorClassName"] in class_names)
