"""A tiny world-model checkpoint folder (random tokenizer and backbone) and a tiny policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpo_ray.config import PolicyConfig, WorldModelConfig
from mbpo_ray.policy import ActionBins, build_policy, save_policy
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
from mbpo_ray.world_model.layout import TokenLayout
from mbpo_ray.world_model.tokenizer import ImageTokenizer, TokenizerPreset
from mbpo_ray.world_model.train import build_backbone
from tests.conftest import random_obs
from tests.policy.conftest import TINY_POLICY, tiny_policy_config

H = 2  # chunk size of these tests
INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer"]
TOKENIZER = TokenizerPreset(image_size=16, codes_side=4, codebook_size=32, channels=(8, 8, 8), latent_channels=8)


@pytest.fixture(scope="session")
def tiny_world_model(tmp_path_factory):
    """Checkpoint folder as `train-world-model` writes it: layout.json, tokenizer/, model/."""
    root = tmp_path_factory.mktemp("wm")
    torch.manual_seed(0)
    ImageTokenizer(TOKENIZER).save(root / "tokenizer")
    layout = TokenLayout.fit(INSTRUCTIONS, np.random.default_rng(0).uniform(-1, 1, (200, 7)),
                             TOKENIZER.codebook_size, TOKENIZER.codes_per_view, chunk_size=H)
    layout.save(root / "layout.json")
    # head_dim 32: the smallest vLLM's CPU attention kernels take
    model = build_backbone(WorldModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=64), layout)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaked: both yes and no answers come up across prompts
    model.save_pretrained(root / "model", safe_serialization=True)
    return str(root)


@pytest.fixture(scope="session")
def pretrained_world_model(tmp_path_factory):
    """The same checkpoint layout with a pretrained causal LM (own 300-token vocabulary, saved here) as
    the backbone: the layout's tokens follow the LM's vocabulary (world_model.pretrained)."""
    import dataclasses

    from tests.world_model.test_pretrained_backbone import BASE, save_tiny_lm

    root = tmp_path_factory.mktemp("wm_pretrained")
    save_tiny_lm(root / "lm")
    torch.manual_seed(0)
    ImageTokenizer(TOKENIZER).save(root / "tokenizer")
    layout = TokenLayout.fit(INSTRUCTIONS, np.random.default_rng(0).uniform(-1, 1, (200, 7)),
                             TOKENIZER.codebook_size, TOKENIZER.codes_per_view, chunk_size=H)
    layout = dataclasses.replace(layout, base_vocab=BASE)
    layout.save(root / "layout.json")
    build_backbone(WorldModelConfig(pretrained=str(root / "lm")), layout).save_pretrained(root / "model")
    return str(root)


def tiny_policy(seed: int = 0):
    torch.manual_seed(seed)
    bins = ActionBins.fit(np.random.default_rng(seed).uniform(-1, 1, (400, 7)), H)
    return build_policy(PolicyConfig(**TINY_POLICY), bins).eval()


SPEC = StoreSpec(image_size=32, chunk_size=H)


@pytest.fixture(scope="session")
def loop_inputs(tmp_path_factory, tiny_world_model):
    """(root, store, policy, world model): a 32 px store of 4 random episodes and a tiny SFT policy."""
    root = tmp_path_factory.mktemp("mbpo")
    store = ReplayStore.create(str(root / "store"), SPEC)
    rng = np.random.default_rng(0)
    for _ in range(4):
        b = EpisodeBuilder(SPEC, suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0], source="demo")
        for c in range(3):
            b.add_chunk(random_obs(rng, SPEC), rng.uniform(-0.3, 0.3, (H, 7)).astype(np.float32), 0.0, False,
                        c == 2, rng.standard_normal(5))
        store.append(b.finish(random_obs(rng, SPEC)))
    torch.manual_seed(0)
    policy = build_policy(tiny_policy_config(), ActionBins.fit(rng.uniform(-0.3, 0.3, (400, 7)), H))
    save_policy(policy, root / "policy", {"demos": {}, "store_image_size": SPEC.image_size})
    return root, str(root / "store"), str(root / "policy"), tiny_world_model
