"""Tiny demonstration stores and tiny policies for the policy tests."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.config import PolicyConfig
from mbpo_ray.replay import EpisodeBuilder, ReplayStore
from tests.conftest import TINY, random_obs

TINY_POLICY = {"image_size": 16, "vision_widths": "8,16", "vision_depths": "1,1", "text_width": 16,
               "hidden_size": 32}


def tiny_policy_config() -> PolicyConfig:
    return PolicyConfig(**TINY_POLICY)


def learnable_episode(rng: np.random.Generator, task_id: int, chunks: int = 3, success: bool = True,
                      source: str = "demo"):
    """Random frames; actions a fixed function of the task (plus small noise), so BC can fit them."""
    b = EpisodeBuilder(TINY, suite="libero_spatial", task_id=task_id, instruction=f"put bowl {task_id} on plate",
                       source=source)
    base = np.linspace(-0.8, 0.8, TINY.chunk_size * TINY.action_dim).reshape(TINY.chunk_size, -1)
    base = base * (1 if task_id % 2 == 0 else -1)
    for c in range(chunks):
        acts = (base + rng.normal(0, 0.02, base.shape)).astype(np.float32)
        last = c == chunks - 1
        n = TINY.chunk_size - 1 if last else TINY.chunk_size  # a chunk cut short at the episode's end
        b.add_chunk(random_obs(rng), acts[:n], reward=float(last and success), success=last and success,
                    done=last)
    return b.finish(random_obs(rng))


def make_demo_store(path, tasks=(0, 1), episodes: int = 3, failures: int = 1, seed: int = 0) -> ReplayStore:
    """Per task: one failed demo first (never chosen), then ``episodes`` successful ones."""
    rng = np.random.default_rng(seed)
    store = ReplayStore.create(str(path), TINY)
    for t in tasks:
        for _ in range(failures):
            store.append(learnable_episode(rng, t, success=False))
        for _ in range(episodes):
            store.append(learnable_episode(rng, t))
    return store


@pytest.fixture
def demo_store(tmp_path) -> ReplayStore:
    return make_demo_store(tmp_path / "demos")
