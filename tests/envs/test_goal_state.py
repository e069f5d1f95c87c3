"""Goal states measured from recorded simulator states, on real LIBERO (one expert episode of task 0)."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.envs import EnvError, LiberoEnv
from mbpo_ray.envs.goal_state import goal_of, goal_states, head_pixels, measure, radius_in_pixels

pytestmark = pytest.mark.libero


@pytest.fixture(scope="module")
def expert_store(tmp_path_factory):
    from mbpo_ray.collect import run_expert_episode
    from mbpo_ray.config import build_config
    from mbpo_ray.replay import ReplayStore, StoreSpec

    cfg = build_config(overrides={"env": {"task_id": 0, "image_size": 32}})
    path = str(tmp_path_factory.mktemp("goal") / "store")
    store = ReplayStore.create(path, StoreSpec(image_size=32, chunk_size=10))
    with LiberoEnv(cfg.env) as env:
        assert run_expert_episode(env, cfg, store, 0, 0).success
    return store


def off_centre(env: LiberoEnv, sim_state: list, dx: float) -> np.ndarray:
    """``sim_state`` with the goal object moved ``dx`` metres along x (it keeps its height)."""
    raw = env.raw
    raw.sim.set_state_from_flattened(np.asarray(sim_state))
    _, obj, _ = goal_of(env)
    addr = raw.sim.model.get_joint_qpos_addr(raw.objects_dict[obj].joints[0])
    raw.sim.data.qpos[addr[0]] += dx
    raw.sim.forward()
    return raw.sim.get_state().flatten()


def test_an_expert_episode_goes_from_elsewhere_through_lifted_to_the_goal(expert_store):
    eid = expert_store.episodes[0].episode_id
    n = expert_store.episodes[0].rows
    g = goal_states(expert_store, [(eid, k) for k in range(n)], image_size=32)
    cats = g.category()
    assert cats[0] == "elsewhere" and g.lift[0] == 0.0 and not g.satisfied[0]
    assert cats[-1] == "goal" and g.contact[-1] and g.offset_xy[-1] < 0.03 and g.height[-1] >= 0
    assert "lifted" in cats[1:-1] and g.lift.max() > 0.05  # the expert carries the bowl over the plate
    assert not g.satisfied[:-1].any()
    assert g.target_px.shape == (n, 2) and ((g.target_px >= 0) & (g.target_px < 32)).all()  # the plate is in view


def test_a_bowl_on_the_plate_but_off_centre_is_not_the_goal(expert_store):
    eid = expert_store.episodes[0].episode_id
    last = expert_store.read_episode(eid, ["sim_state"]).column("sim_state").to_pylist()[-1]
    with LiberoEnv(_env_cfg()) as env:
        env.reset(0, render=False)
        placed = measure(env, last)
        moved = measure(env, off_centre(env, last, 0.04))
        with pytest.raises(EnvError, match="does not fit"):
            measure(env, np.zeros(5))
    assert placed.satisfied and placed.contact
    assert moved.contact and moved.height >= 0 and not moved.satisfied  # LIBERO's 3 cm radius
    assert 0.04 - placed.offset_xy - 1e-6 <= moved.offset_xy <= 0.04 + placed.offset_xy + 1e-6


def test_rows_outside_the_store_are_one_clear_error(expert_store):
    eid = expert_store.episodes[0].episode_id
    with pytest.raises(EnvError, match="not in the store"):
        goal_states(expert_store, [("nope", 0)], image_size=32)
    with pytest.raises(EnvError, match="no simulator state recorded for row 99"):
        goal_states(expert_store, [(eid, 99)], image_size=32)


def _env_cfg():
    from mbpo_ray.config import EnvConfig

    return EnvConfig(suite="libero_spatial", task_id=0, image_size=32)


def test_replay_outcomes_counts_how_each_episode_ended(expert_store, tmp_path, capsys):
    import json

    from mbpo_ray.cli import main

    root = expert_store.root
    assert main(["replay", "outcomes", root, "--json", str(tmp_path / "o.json")]) == 0
    (row,) = json.loads((tmp_path / "o.json").read_text())
    assert (row["task_id"], row["source"], row["episodes"], row["recorded_successes"]) == (0, "demo", 1, 1)
    assert row["ended"] == {"goal": 1, "on_target_off_centre": 0, "lifted": 0, "elsewhere": 0}
    assert "libero_spatial/0" in capsys.readouterr().out
    assert main(["replay", "outcomes", root, "--source", "real"]) == 2  # no such episodes: one clear error
    assert "holds no episodes of source real" in capsys.readouterr().err


def test_the_goal_radius_is_a_few_pixels_of_the_head_camera():
    """LIBERO's 3 cm around the plate's centre, as the agent view sees it: it halves with the image size."""
    px = radius_in_pixels("libero_spatial", 0, (128, 64))
    big, small = px[128], px[64]
    assert 2 < big < 10 and big / small == pytest.approx(2, rel=0.05)


def test_the_target_projects_onto_the_plate_in_the_upright_head_view():
    """The plate's centre, projected, lands on the plate's bright pixels, not on the mirrored places a
    wrong turn of the camera's image would give; the same point at half the image size is half as far."""
    from mbpo_ray.config import EnvConfig

    with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=128)) as env:
        head = env.reset(0).head.astype(float)
        centre = measure(env, env.raw.sim.get_state().flatten()).target_xyz
        (r, c), (r64, c64) = head_pixels(env, centre[None])[0], head_pixels(env, centre[None], 64)[0]

    def bright(row: float, col: float) -> float:
        i, j = int(row), int(col)
        return float(head[i - 1 : i + 2, j - 1 : j + 2].min(axis=-1).mean())

    assert bright(r, c) > 150
    assert all(bright(r, c) > bright(a, b) + 40 for a, b in ((r, 128 - c), (128 - r, c), (128 - r, 128 - c)))
    assert (r64, c64) == pytest.approx((r / 2, c / 2), abs=1e-6)
