"""The chunked LIBERO environment on the real simulator (a few chunk steps)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mbpo_ray.config import EnvConfig
from mbpo_ray.envs import EnvError, LiberoEnv
from mbpo_ray.envs.libero_env import upright

pytestmark = pytest.mark.libero
S = 64


@pytest.fixture(scope="module")
def env():
    with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=S)) as e:
        yield e


def count_renders(env) -> list[str]:
    """Record every camera the simulator renders from now on (wraps the real render call)."""
    calls: list[str] = []
    sim = env.raw.sim
    real = sim.render

    def render(*args, **kwargs):
        calls.append(kwargs.get("camera_name", args[2] if len(args) > 2 else "?"))
        return real(*args, **kwargs)

    sim.render = render
    return calls


def test_chunk_steps_render_once_per_chunk(env):
    first = env.reset(init_state=0)
    assert env.t == 0 and env.instruction.startswith("pick up the black bowl")
    calls = count_renders(env)
    rng = np.random.default_rng(0)
    obs = first
    for k in range(3):
        chunk = np.clip(rng.normal(0, 0.3, (env.cfg.chunk_size, 7)), -1, 1)
        result = env.step_chunk(chunk)
        assert result.steps == env.cfg.chunk_size and not result.done and result.reward == 0.0
        assert sorted(calls) == sorted(["agentview", "robot0_eye_in_hand"] * (k + 1))
        for view in (result.obs.head, result.obs.wrist):
            assert view.shape == (S, S, 3) and view.dtype == np.uint8 and view.std() > 10
        assert not np.array_equal(result.obs.proprio, obs.proprio)
        obs = result.obs
    assert env.t == 3 * env.cfg.chunk_size
    np.testing.assert_allclose(obs.proprio[:3], env.raw.sim.data.site_xpos[env.raw.robots[0].eef_site_id],
                               atol=1e-5)


def test_views_are_right_way_up(env):
    obs = env.reset(init_state=1)
    sim = env.raw.sim
    for cam, frame in (("agentview", obs.head), ("robot0_eye_in_hand", obs.wrist)):
        np.testing.assert_array_equal(frame, upright(sim.render(camera_name=cam, width=S, height=S)))
    # head camera looks down onto the table: upright, the far scene (top rows) is deeper than the front
    _, depth = sim.render(camera_name="agentview", width=S, height=S, depth=True)
    depth = upright(depth[..., None])[..., 0]
    assert depth[: S // 4].mean() > depth[-S // 4 :].mean()
    # wrist camera: the gripper fingers, nearest to the lens, sit at the bottom of the upright view
    _, depth = sim.render(camera_name="robot0_eye_in_hand", width=S, height=S, depth=True)
    depth = upright(depth[..., None])[..., 0]
    assert depth[-S // 4 :].min() < depth[: S // 4].min()


def test_bad_actions_and_states(env):
    env.reset(init_state=0, render=False)
    with pytest.raises(EnvError, match=r"action chunk must have shape \(H, 7\), got \(10, 6\)"):
        env.step_chunk(np.zeros((10, 6)))
    with pytest.raises(EnvError, match=r"init_state must be in 0..49, got 50"):
        env.reset(init_state=50)


def test_time_limit_ends_episode():
    cfg = EnvConfig(suite="libero_spatial", task_id=1, image_size=32, max_steps=15, settle_steps=2)
    with LiberoEnv(cfg) as env:
        env.reset(init_state=0, render=False)
        first = env.step_chunk(np.zeros((10, 7)))
        second = env.step_chunk(np.zeros((10, 7)))
        assert (first.steps, first.done, second.steps, second.done) == (10, False, 5, True)
        assert env.t == 15 and not second.success
        with pytest.raises(EnvError, match="episode is over"):
            env.step_chunk(np.zeros((10, 7)))


CLOSE_SCRIPT = """
import numpy as np
from mbpo_ray.config import EnvConfig
from mbpo_ray.envs import LiberoEnv
for task in (0, 1):
    with LiberoEnv(EnvConfig(task_id=task, image_size=32)) as env:
        env.reset(0)
        env.step_chunk(np.zeros((2, 7)))
print("closed")
"""


def test_no_leaked_gl_context():
    out = subprocess.run([sys.executable, "-c", CLOSE_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("closed")
    assert "EGLError" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-2000:]


RENDER_THEN_IMPORT = """
from mbpo_ray.config import EnvConfig
from mbpo_ray.envs import LiberoEnv
with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=16)) as env:
    env.reset(0)
import torch._dynamo  # imports triton, as transformers and vLLM do after an env runner has rendered
from transformers import AutoModelForCausalLM  # noqa: F401
print("imported")
"""


def test_a_process_that_rendered_can_still_import_the_model_stack():
    out = subprocess.run([sys.executable, "-c", RENDER_THEN_IMPORT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.strip().endswith("imported")


def test_episode_does_not_depend_on_the_episodes_before_it(env):
    """The same init state and actions give the same frames and states, whatever ran in this env before
    (the scene is reset in place, ``env.soft_reset``, and every reset is seeded per init state)."""
    actions = np.tile([0.3, -0.2, 0.1, 0.0, 0.0, 0.0, -1.0], (15, 1))

    def rollout(init_state: int):
        first = env.reset(init_state)
        for a in actions:
            env.step(a)
        return first.head, first.wrist, env.sim_state()

    a = rollout(1)
    rollout(0)
    for x, y in zip(a, rollout(1), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("suite,task", [("libero_spatial", 0), ("libero_spatial", 4), ("libero_goal", 0)])
def test_an_in_place_reset_is_bit_for_bit_a_rebuild(suite, task):
    """Resets and restores in a reused scene give the frames and states of a scene rebuilt every time,
    whatever ran before, another env made and closed in the process included (libero_goal: articulated
    cabinet drawers and a stove among the fixtures; libero_spatial task 4: a drawer whose open/close
    sampler LIBERO appends again at every build, so without ``LiberoEnv``'s care a rebuilt scene placed
    the cabinet and the stove according to the number of resets before it). The same init state
    twice in one env gives the same episode either way."""
    actions = np.tile([0.4, -0.3, 0.2, 0.0, 0.1, 0.0, 1.0], (12, 1))

    def episodes(soft: bool) -> list[np.ndarray]:
        out, state = [], None
        with LiberoEnv(EnvConfig(suite=suite, task_id=task, image_size=32, soft_reset=soft)) as e:
            for init in (1, 0, 1, None):
                if init == 0:  # its GL context becomes current, then is freed
                    with LiberoEnv(EnvConfig(suite=suite, task_id=1, image_size=16)) as other:
                        other.reset(0)
                first = e.reset(init) if init is not None else e.restore(state)
                for a in actions:
                    e.step(a)
                state = e.sim_state()
                out += [first.head, first.wrist, state, e.observe().head]
        return out

    soft, rebuilt = episodes(True), episodes(False)
    for x, y in zip(soft, rebuilt, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(rebuilt[:4], rebuilt[8:12], strict=True):  # init state 1, first and third episode
        np.testing.assert_array_equal(x, y)


def test_a_successful_chunk_runs_to_its_end_and_looks_like_any_other(tmp_path):
    """The scripted expert solves task 0: the chunk in which success comes still executes all H actions
    (success stays recorded), so in the world model's training data a success chunk and a failure
    chunk have the same action-token layout: no padded tail that would tell the answer."""
    from mbpo_ray.collect import run_expert_episode
    from mbpo_ray.config import build_config
    from mbpo_ray.replay import ReplayStore, StoreSpec
    from mbpo_ray.world_model.data import load_episodes, sequences
    from mbpo_ray.world_model.layout import TokenLayout

    cfg = build_config(overrides={"env": {"task_id": 0, "image_size": 32}})
    store = ReplayStore.create(str(tmp_path / "store"), StoreSpec(image_size=32, chunk_size=10))
    with LiberoEnv(cfg.env) as env:
        r = run_expert_episode(env, cfg, store, 0, 0)
        assert r.success and env.t % 10 == 0  # the episode ended on a chunk boundary
        with pytest.raises(EnvError, match="episode is over"):
            env.step(np.zeros(7))
    ep = load_episodes(store, [store.episodes[0].episode_id])
    rows = ep.transitions()
    assert ep.success[rows[-1]] and not ep.success[rows[:-1]].any() and (ep.num_actions[rows] == 10).all()
    layout = TokenLayout.fit([ep.instruction[0]], ep.actions.reshape(-1, 7), 8, 4, 10)
    codes = np.zeros((len(ep.head), 4), np.int64)
    prompts, targets = sequences(ep, codes, codes, layout, rows)
    acts = [p[-71:-1] for p in prompts]  # the H x 7 action tokens before the closing <head>
    for k, a in zip(rows, acts, strict=True):  # exactly the executed actions, no padding, for every chunk
        assert a == (layout.action_bins(ep.actions[k]) + layout.bin_offset).reshape(-1).tolist()
    assert {len(p) for p in prompts} == {len(prompts[0])}
