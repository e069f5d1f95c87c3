"""The frame reward: a success classifier that reads only the observation's head and wrist views."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.world_model.frame_reward import (
    FrameReward,
    FrameRewardConfig,
    observation_labels,
    train_frame_reward,
)
from tests.world_model.test_counterfactual import episodes

S = 16


def frames(n: int, success: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random scenes; a success shows a red square in the head view, and every scene may show a
    green one (a distractor the classifier must not count)."""
    base = rng.integers(40, 120, (n, 4, 4, 3)).repeat(4, 1).repeat(4, 2).astype(np.uint8)
    head, wrist = base.copy(), base[:, ::-1].copy()
    for i in range(n):
        y, x = rng.integers(0, S - 5, 2)
        if success[i]:
            head[i, y : y + 5, x : x + 5] = (230, 20, 20)
        if rng.random() < 0.5:
            y, x = rng.integers(0, S - 5, 2)
            head[i, y : y + 5, x : x + 5] = (20, 220, 20)
    return head, wrist, success


def test_it_learns_success_from_the_frames_and_saves_exactly(tmp_path):
    rng = np.random.default_rng(0)
    train = frames(600, rng.random(600) < 0.1, rng)
    val = frames(200, rng.random(200) < 0.1, rng)
    test_head, test_wrist, test_y = frames(300, rng.random(300) < 0.1, rng)
    model = train_frame_reward(train, val, FrameRewardConfig(steps=300, eval_every=50, width=16), progress=False)
    p = model.p_success(test_head, test_wrist)
    pred = p > 0.5
    f1 = 2 * (pred & test_y).sum() / (pred.sum() + test_y.sum())
    assert f1 >= 0.9, f"held-out F1 {f1:.2f}"
    assert model.meta["val_f1"] >= 0.9 and model.meta["train_positives"] == int(train[2].sum())
    model.save(tmp_path / "reward")
    again = FrameReward.load(tmp_path / "reward")
    np.testing.assert_array_equal(again.p_success(test_head, test_wrist), p)
    with pytest.raises(ValueError, match="expects head and wrist frames"):
        model.p_success(test_head[:, :8], test_wrist[:, :8])
    with pytest.raises(FileNotFoundError, match="train-frame-reward"):
        FrameReward.load(tmp_path / "nothing")


def test_no_success_to_learn_from_is_one_clear_error():
    from mbpo_ray.replay.schema import ReplayError

    rng = np.random.default_rng(1)
    none = frames(50, np.zeros(50, bool), rng)
    with pytest.raises(ReplayError, match="needs successes"):
        train_frame_reward(none, none, FrameRewardConfig(steps=2), progress=False)


def test_every_observation_after_a_chunk_is_labelled_by_that_chunk():
    ep = episodes()  # two episodes of 3 chunks; the first succeeds in its last chunk
    rows, labels = observation_labels(ep)
    assert rows.tolist() == [1, 2, 3, 5, 6, 7]
    assert labels.tolist() == [False, False, True, False, False, False]
