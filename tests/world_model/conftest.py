"""A tiny world-model checkpoint (random weights) in the real checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpo_ray.config import WorldModelConfig
from mbpo_ray.world_model.layout import TokenLayout
from mbpo_ray.world_model.train import build_backbone

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer"]


def tiny_layout() -> TokenLayout:
    rng = np.random.default_rng(0)
    return TokenLayout.fit(INSTRUCTIONS, rng.uniform(-1, 1, (200, 7)), codebook_size=64, codes_per_view=4,
                           chunk_size=2)


def random_prompts(layout: TokenLayout, n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [layout.prompt(INSTRUCTIONS[i % 2], rng.integers(0, 64, 4), rng.integers(0, 64, 4),
                          rng.uniform(-1, 1, (2, 7))) for i in range(n)]


def random_weights(layout: TokenLayout, seed: int):
    """A tiny causal LM with peaked output distributions, so greedy choices are well separated."""
    torch.manual_seed(seed)
    model = build_backbone(WorldModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
                           layout)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    layout = tiny_layout()
    path = tmp_path_factory.mktemp("wm") / "model"
    random_weights(layout, 0).save_pretrained(path, safe_serialization=True)
    return str(path), layout
