"""benchmarks/reward_resolution.py on real LIBERO: stored observations restored and rendered again, and
the cross-validated comparison end to end on one expert episode stored four times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from benchmarks.reward_resolution import area, folds_of, paired_f1, render_task

pytestmark = pytest.mark.libero
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def four_episodes(tmp_path_factory) -> str:
    """One expert episode of task 0 at 32 pixels, stored as two demonstrations and two rollouts."""
    from mbpo_ray.collect import run_expert_episode
    from mbpo_ray.config import build_config
    from mbpo_ray.envs import LiberoEnv
    from mbpo_ray.replay import ReplayStore, StoreSpec

    cfg = build_config(overrides={"env": {"task_id": 0, "image_size": 32}})
    path = str(tmp_path_factory.mktemp("resolution") / "store")
    store = ReplayStore.create(path, StoreSpec(image_size=32, chunk_size=10))
    with LiberoEnv(cfg.env) as env:
        assert run_expert_episode(env, cfg, store, 0, 0).success
    table = store.read_episode(0)
    for k, source in enumerate(("demo", "real", "real")):
        t = table.set_column(table.schema.get_field_index("episode_id"), "episode_id",
                             pa.array([f"copy{k}"] * table.num_rows, table.schema.field("episode_id").type))
        t = t.set_column(t.schema.get_field_index("source"), "source", pa.array([source] * t.num_rows, t.schema.field("source").type))
        store.append(t)
    return path


def test_a_restored_observation_renders_what_was_stored_and_more_pixels_of_it(four_episodes):
    from mbpo_ray.replay import ReplayStore

    eid = ReplayStore.open(four_episodes).episodes[0].episode_id
    same = render_task(four_episodes, "libero_spatial", 0, [eid], render=32, window=16)
    n = len(same["success"])
    assert n >= 5 and same["head"].shape == (n, 16, 16, 3) and same["wrist"].shape == (n, 64, 64, 3)
    diff = np.abs(same["head"].astype(int) - same["stored_head"].astype(int))
    assert diff.mean() < 1.0, "the restored state renders the stored frame"
    assert np.abs(same["wrist"].astype(int) - same["stored_wrist"].astype(int)).mean() < 1.0
    assert same["satisfied"][-1] and not same["satisfied"][:-1].any() and same["success"][-1]
    more = render_task(four_episodes, "libero_spatial", 0, [eid], render=128, window=16)
    assert more["head"].shape == (n, 64, 64, 3)
    assert np.array_equal(more["satisfied"], same["satisfied"]) and np.allclose(more["offset_xy"], same["offset_xy"])
    down = area(more["head"], 16).astype(int)  # four times the pixels, averaged back: close to the stored frame
    assert np.abs(down - same["head"].astype(int)).mean() < 12


def test_folds_keep_episodes_whole_and_balance_each_group():
    episode = np.array(["a", "a", "b", "c", "c", "d", "e", "f"])
    group = np.array(["demo"] * 5 + ["real"] * 3)
    fold = folds_of(episode, group, 2, seed=0)
    for e in set(episode):
        assert len(set(fold[episode == e])) == 1
    per = {(g, f) for g, f, e in zip(group, fold, episode, strict=True)}
    assert {f for g, f in per if g == "demo"} == {0, 1} and {f for g, f in per if g == "real"} == {0, 1}
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.1, 0.9])
    truth = np.array([1, 0, 1, 0, 1, 0, 0, 1], bool)
    same = paired_f1(p, p, truth, episode, resamples=50)
    assert same["f1_difference"] == 0 and same["ci95"] == [0, 0]
    worse = paired_f1(p, 1 - p, truth, episode, resamples=50)
    assert worse["f1_difference"] < 0 and worse["ci95"][0] < 0


def test_cross_validated_views_end_to_end(four_episodes, tmp_path):
    cmd = [sys.executable, "benchmarks/reward_resolution.py", "--store", four_episodes, "--work", str(tmp_path / "w"),
           "--render", "64", "--window", "8", "--sizes", "8", "16", "--steps", "4"]
    env = {**os.environ, "MBPO_RESULTS_DIR": str(tmp_path / "r")}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r" / "reward_resolution.json").read_text())
    assert list(res["views"]) == ["stored", "8", "16"] and res["observations"] % 4 == 0
    cached = list((tmp_path / "w").glob("*.npz"))  # one task's renders, named by its episodes
    assert len(cached) == 1 and cached[0].name.startswith("libero_spatial_0_64_8_")
    assert res["episodes"] == 4 and res["views"]["16"]["by_source"]["real"]["positives"] == 2
    assert set(res["paired_vs_lowest_on_rollouts"]) == {"stored", "16"} and (tmp_path / "r" / "reward_resolution.png").is_file()
    assert "command" in res and "commit" in res
    bad = subprocess.run([*cmd[:-2], "--sizes", "5", "--steps", "4"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "divide" in bad.stderr
    assert json.loads((tmp_path / "r" / "reward_resolution.json").read_text()) == res  # nothing overwritten
