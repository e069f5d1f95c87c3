"""Start-state samplers: uniform, and the reverse curriculum that starts near the end of successful
episodes, widens over iterations, and weights states of failed episodes."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.config import build_config
from mbpo_ray.replay import EpisodeMeta, ReplayError
from mbpo_ray.replay.samplers import SAMPLERS, chunks_to_go


def meta(i: int, chunks: int, success: bool, task: int = 0, grasp: int = -1) -> EpisodeMeta:
    return EpisodeMeta(episode_id=f"e{i}", part=0, first_row=0, rows=chunks + 1, chunks=chunks, suite="libero_spatial",
                       task_id=task, success=success, env_steps=10 * chunks, source="demo" if success else "real",
                       grasp_chunk=grasp)


EPISODES = [meta(0, 20, True, grasp=5), meta(1, 12, True, grasp=1), meta(2, 22, False, grasp=8),
            meta(3, 15, True, task=1)]


def mc(**kw):
    return build_config(overrides={"mbpo": {"start_sampler": "reverse", "start_window": 2,
                                            "start_window_growth": 0.5, **kw}}).mbpo


def test_reverse_starts_at_the_end_of_successes_and_widens():
    rng = np.random.default_rng(0)
    ep, chunk = SAMPLERS["reverse"](EPISODES, 4000, rng, 0, 0, mc(fail_weight=0.0))
    assert set(ep) == {0, 1}  # task 0, successful episodes only (fail_weight 0)
    assert set(chunks_to_go(EPISODES, ep, chunk)) == {1, 2}  # the last 2 chunk boundaries
    ep, chunk = SAMPLERS["reverse"](EPISODES, 4000, rng, 0, 10, mc(fail_weight=0.0))  # window 2 + 5
    assert set(chunks_to_go(EPISODES, ep, chunk)) == set(range(1, 8))


def test_reverse_draws_failed_episodes_uniformly_with_their_weight():
    rng = np.random.default_rng(0)
    ep, chunk = SAMPLERS["reverse"](EPISODES, 20000, rng, 0, 0, mc(fail_weight=3.0))
    failed = ep == 2
    assert set(chunk[failed]) == set(range(22))  # every state of the failed episode
    # weights: successes offer 2 boundaries each, the failure 22 x 3
    assert failed.mean() == pytest.approx(66 / 70, abs=0.01)


def test_uniform_covers_every_boundary_and_bad_draws_fail_clearly():
    rng = np.random.default_rng(0)
    ep, chunk = SAMPLERS["uniform"](EPISODES, 20000, rng, 1)
    assert set(ep) == {3} and set(chunk) == set(range(15))
    with pytest.raises(ReplayError, match="no start states for task 7"):
        SAMPLERS["uniform"](EPISODES, 1, rng, 7)
    with pytest.raises(ReplayError, match="fail_weight=0"):
        SAMPLERS["reverse"]([EPISODES[2]], 1, rng, 0, 0, mc(fail_weight=0.0))


def test_grasp_starts_just_before_the_first_gripper_close_and_widens():
    rng = np.random.default_rng(0)
    ep, chunk = SAMPLERS["grasp"](EPISODES, 20000, rng, 0, 0, mc(fail_weight=2.0))
    assert {e: set(chunk[ep == e]) for e in (0, 1, 2)} == {0: {4, 5}, 1: {0, 1}, 2: {7, 8}}
    assert (ep == 2).mean() == pytest.approx(4 / 8, abs=0.015)  # 2 boundaries each, the failure x 2
    ep, chunk = SAMPLERS["grasp"](EPISODES, 4000, rng, 0, 4, mc(fail_weight=1.0))  # window 2 + 2
    assert set(chunk[ep == 0]) == {2, 3, 4, 5} and set(chunk[ep == 1]) == {0, 1}  # not before chunk 0
    with pytest.raises(ReplayError, match="no stored episode closes the gripper"):
        SAMPLERS["grasp"](EPISODES, 1, rng, 1, 0, mc())  # task 1's episode never closes it


def test_initial_draws_the_first_state_of_every_episode_of_the_task():
    ep, chunk = SAMPLERS["initial"](EPISODES, 3000, np.random.default_rng(0), 0, 5, mc())
    assert set(chunk) == {0} and set(ep) == {0, 1, 2}
    assert np.bincount(ep).min() > 900  # episodes equally likely, whatever their length


def test_groups_take_an_equal_share_per_task_and_repeat_each_start():
    from mbpo_ray.replay.samplers import draw_groups

    m = mc(fail_weight=1.0, group_size=4)
    ep, chunk, group = draw_groups(EPISODES, 4000, [0, 1], np.random.default_rng(0), 0, m)
    assert len(ep) == 4000 and group.tolist() == np.repeat(np.arange(1000), 4).tolist()
    starts = ep.reshape(1000, 4)
    assert (starts == starts[:, :1]).all() and (chunk.reshape(1000, 4) == chunk.reshape(1000, 4)[:, :1]).all()
    share = np.mean([EPISODES[int(e)].task_id for e in starts[:, 0]])
    assert 0.45 < share < 0.55  # tasks drawn with equal probability, not by how many states they hold
    with pytest.raises(ValueError, match="whole groups"):
        draw_groups(EPISODES, 6, [0], np.random.default_rng(0), 0, m)
