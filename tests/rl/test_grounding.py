"""Imagined branches replayed in real LIBERO from their start's recorded simulator state."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.config import EnvConfig
from mbpo_ray.envs.libero_env import EnvError, LiberoEnv
from mbpo_ray.rl.grounding import grounding_report, imagined_after, replay_branches
from mbpo_ray.rl.imagine import Branches

CFG = EnvConfig(suite="libero_spatial", task_id=0, image_size=32, chunk_size=4)


def branches(head: np.ndarray, actions: np.ndarray, p_yes: np.ndarray) -> Branches:
    b, n = p_yes.shape
    frames = np.repeat(head[None, None], b, 0).repeat(n, 1)
    terminal = p_yes > 0.5
    valid = np.ones((b, n), bool)
    valid[:, 1:] = ~terminal[:, :1]  # a branch ends at its first yes
    return Branches(head=frames, wrist=frames.copy(), instruction=["x"] * b, actions=actions,
                    token_log_prob=np.zeros(actions.shape, np.float32), value=np.zeros((b, n), np.float32),
                    reward=terminal.astype(np.float32), p_yes=p_yes, terminal=terminal & valid, valid=valid,
                    last_value=np.zeros(b, np.float32), final_head=frames[:, 0], final_wrist=frames[:, 0])


def test_a_restored_state_continues_as_the_original_did_and_branches_replay_on_it():
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.5, 0.5, (3, 4, 7)).astype(np.float32)
    with LiberoEnv(CFG) as env:
        env.reset(0, render=False)
        env.step_chunk(acts[0])
        state, seen = env.sim_state(), env.observe()
        after = env.step_chunk(acts[1])
        again = env.restore(state)
        assert np.abs(again.head.astype(int) - seen.head).mean() < 1.0 and env.t == 0 and not env.success
        redo = env.step_chunk(acts[1])
        assert np.abs(redo.obs.head.astype(int) - after.obs.head).mean() < 2.0
        with pytest.raises(EnvError, match="no simulator state"):
            env.restore(np.zeros(0))
    # two branches of two chunks from that state; branch 0 imagines success at its first step
    p_yes = np.array([[0.9, 0.0], [0.1, 0.2]], np.float32)
    br = branches(seen.head[:16, :16], np.stack([acts[1:3], acts[1:3]]), p_yes)
    real = replay_branches(CFG, [("libero_spatial", 0)] * 2, [state, state], br, progress=False)
    assert not real.success.any()  # random arm motion does not put the bowl on the plate
    np.testing.assert_allclose(real.head[0, 0], real.head[1, 0], atol=8)  # same state, same chunk
    assert not real.head[0, 1].any() and real.head[1, 1].any()  # branch 0 ended: its step 1 was not replayed
    # the same replay over two spawned processes, one branch each: the same outcomes and views
    par = replay_branches(CFG, [("libero_spatial", 0)] * 2, [state, state], br, progress=False, workers=2, part_size=1)
    np.testing.assert_array_equal(par.success, real.success)
    np.testing.assert_allclose(par.head.astype(int), real.head.astype(int), atol=8)
    assert not par.head[0, 1].any() and par.head[1, 1].any()
    rep = grounding_report(br, real, 16)
    assert rep["steps"] == 3 and rep["per_step"]["decided"]["predicted_yes"] == 1
    assert rep["per_branch"]["only_imagined"] == 1 and rep["per_branch"]["agreement"] == 0.5
    assert rep["views"]["head"]["psnr_by_step"] and "frame_reward" not in rep["per_step"]


def test_the_imagined_view_after_a_branch_s_last_step_is_its_final_observation():
    view = np.arange(2 * 3).reshape(2, 3, 1, 1, 1).astype(np.uint8).repeat(2, 2).repeat(2, 3).repeat(3, 4)
    final = np.full((2, 2, 2, 3), 99, np.uint8)
    valid = np.array([[True, True, True], [True, False, False]])
    out = imagined_after(view, final, valid)
    assert out[0, 0, 0, 0, 0] == 1 and out[0, 1, 0, 0, 0] == 2 and out[0, 2, 0, 0, 0] == 99
    assert out[1, 0, 0, 0, 0] == 99
