"""One input domain: a policy whose every frame round-trips through the world model's tokenizer,
saved and loaded with its checkpoint, untouched by training."""

from __future__ import annotations

import numpy as np
import torch

from mbpo_ray.policy import ActionBins, build_policy, load_policy, save_policy, with_frame_codec
from mbpo_ray.policy.base import Observations
from mbpo_ray.world_model.tokenizer import ImageTokenizer
from tests.policy.conftest import tiny_policy_config
from tests.rl.conftest import TOKENIZER


def test_frames_round_trip_through_the_codec_and_travel_with_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    ImageTokenizer(TOKENIZER).save(tmp_path / "tok")
    policy = build_policy(tiny_policy_config(), ActionBins.fit(np.random.default_rng(0).uniform(-1, 1, (99, 7)), 2))
    save_policy(policy, tmp_path / "raw", {"demos": {}, "store_image_size": 16})
    coded = load_policy(with_frame_codec(tmp_path / "raw", tmp_path / "tok", tmp_path / "coded"))
    raw = load_policy(tmp_path / "raw")
    assert raw.frame_codec is None and coded.frame_codec is not None
    assert (tmp_path / "coded" / "codec" / "tokenizer.json").is_file()
    assert set(coded.state_dict()) == set(raw.state_dict())  # the codec is not trained or saved as weights
    rng = np.random.default_rng(0)
    obs = Observations(rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8),
                       rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), np.zeros((3, 8), np.float32), ["x"] * 3)
    codec = coded.frame_codec
    seen = Observations(codec.decode(codec.encode(obs.head)), codec.decode(codec.encode(obs.wrist)), obs.proprio,
                        obs.instruction)
    a = coded.act(obs, greedy=True)
    np.testing.assert_array_equal(a.bins.numpy(), raw.act(seen, greedy=True).bins.numpy())
    assert not np.array_equal(seen.head, obs.head)
    logp, _, _ = coded.evaluate(obs, a.actions)
    np.testing.assert_allclose(logp.detach().numpy(), raw.evaluate(seen, a.actions)[0].detach().numpy(), rtol=1e-5)
