"""Imagination with its reward read from the imagined frames (world_model.reward_source), end to end on a
tiny random world model: `mbpo-ray train-frame-reward`, the world model's P(yes), the quality report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mbpo_ray.cli import main as cli
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
from mbpo_ray.rl.imagine import imagine
from mbpo_ray.world_model.evaluate import WorldModel, evaluate_world_model
from tests.conftest import random_obs
from tests.rl.conftest import INSTRUCTIONS, H, tiny_policy

SPEC = StoreSpec(image_size=16, chunk_size=H)


def make_store(path, episodes: int, success_every: int) -> list[str]:
    store = ReplayStore.create(str(path), SPEC)
    rng = np.random.default_rng(0)
    for e in range(episodes):
        ok = success_every > 0 and e % success_every == 0
        b = EpisodeBuilder(SPEC, suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0],
                           source="demo" if e % 2 else "real")
        for c in range(3):
            b.add_chunk(random_obs(rng, SPEC), rng.uniform(-0.5, 0.5, (H, 7)).astype(np.float32),
                        float(ok and c == 2), ok and c == 2, c == 2, rng.standard_normal(5))
        store.append(b.finish(random_obs(rng, SPEC)))
    return [e.episode_id for e in ReplayStore.open(str(path)).episodes]


@pytest.fixture()
def checkpoint(tmp_path, tiny_world_model):
    """The tiny world model with a split over a store of 16 episodes, every other one successful."""
    ckpt = tmp_path / "wm"
    shutil.copytree(tiny_world_model, ckpt)
    ids = make_store(tmp_path / "store", 16, 2)
    (ckpt / "split.json").write_text(json.dumps({"train": ids[:12], "heldout": ids[12:]}))
    return ckpt, str(tmp_path / "store")


def test_imagination_reads_its_reward_from_the_imagined_frames(checkpoint, tmp_path):
    ckpt, store = checkpoint
    # with --imagined the world model's own views of every training transition are added
    assert cli(["train-frame-reward", str(ckpt), store, "--steps", "30", "--imagined", "--engine", "hf"]) == 0
    both = json.loads((ckpt / "reward" / "reward.json").read_text())
    assert cli(["train-frame-reward", str(ckpt), store, "--steps", "30"]) == 0
    meta = json.loads((ckpt / "reward" / "reward.json").read_text())
    assert meta["train_positives"] > 0 and meta["val_positives"] > 0 and (ckpt / "reward" / "model.pt").is_file()
    assert both["train_observations"] == 2 * meta["train_observations"] == 2 * 3 * 10  # 10 episodes of 3 chunks
    assert both["train_positives"] == 2 * meta["train_positives"] and not (ckpt / "reward.tmp").exists()
    rng = np.random.default_rng(3)
    head, wrist = (rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    acts = list(rng.uniform(-0.5, 0.5, (8, H, 7)).astype(np.float32))
    token, frames, mean = (WorldModel(str(ckpt), engine="hf", reward=r) for r in ("token", "frames", "mean"))
    tok = token.tokenizer
    r_tok, r_fr, r_mean = (wm.imagine_step(INSTRUCTIONS[:1] * 8, tok.encode(head), tok.encode(wrist), acts)
                           for wm in (token, frames, mean))
    np.testing.assert_array_equal(r_tok.head, r_fr.head)  # the same imagined frames, greedy
    expect = frames.frame_reward.p_success(tok.decode(r_fr.head), tok.decode(r_fr.wrist))
    np.testing.assert_allclose(r_fr.p_yes, expect, rtol=1e-6)
    assert r_tok.p_yes_frames is None and not np.allclose(r_tok.p_yes, r_fr.p_yes)
    np.testing.assert_allclose(r_mean.p_yes, (r_tok.p_yes + expect) / 2, rtol=1e-6)
    br = imagine(frames, tiny_policy(), head, wrist, INSTRUCTIONS[:1] * 8, n_chunks=2, seed=1)
    assert ((br.p_yes > 0.5) == br.terminal).all() and ((br.reward == 1.0) == br.terminal).all()
    # the quality report judges both answers, the frame reward also on the real next frames
    report = evaluate_world_model(str(ckpt), store, str(tmp_path / "report"), engine="hf", temperature=1.0)
    fr = report["frame_reward"]
    assert set(fr["counterfactual"]) == {"recorded", "padded_nonfinal"} and set(fr["by_source"]) == {"demo", "policy"}
    assert fr["real_frames"]["transitions"] == report["reward"]["transitions"] == 12
    assert "frame_reward" in report["sampled"]
    for block in (report, fr):  # every action change judged on each source alone too
        assert set(block["by_source"]["policy"]["counterfactual"]) == {"recorded", "padded_nonfinal"}


def test_a_missing_or_unlearnable_frame_reward_is_one_error(tmp_path, tiny_world_model, capsys):
    ckpt = tmp_path / "wm"
    shutil.copytree(tiny_world_model, ckpt)
    ids = make_store(tmp_path / "store", 6, 0)  # no success anywhere
    (ckpt / "split.json").write_text(json.dumps({"train": ids[:4], "heldout": ids[4:]}))
    with pytest.raises(FileNotFoundError, match="train-frame-reward"):
        WorldModel(str(ckpt), engine="hf", reward="frames")
    assert cli(["train-frame-reward", str(ckpt), str(tmp_path / "store"), "--steps", "5"]) == 2
    assert "needs successes" in capsys.readouterr().err and not (ckpt / "reward").exists()
    with pytest.raises(ValueError, match="reward_source"):
        WorldModel(str(ckpt), engine="hf", reward="pixels")
