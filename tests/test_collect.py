"""Demonstration collection end to end: env-runner Ray actors on a real local cluster, real LIBERO."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mbpo_ray.cli import main
from mbpo_ray.replay import ReplayStore, frames

pytestmark = pytest.mark.libero


def test_run_collects_in_parallel_actors_and_shows_an_episode(ray_cluster, tmp_path, capsys):
    code = main(["run", f"--cache_dir={tmp_path}", "--collect.episodes=2", "--collect.workers=2",
                 "--env.image_size=64"])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = next((tmp_path / "runs").iterdir())
    store = ReplayStore.open(str(run_dir / "replay"))
    info = store.info()
    assert info["episodes"] == 2 and info["success_rate"] == 1.0  # the expert solves init states 0 and 1
    assert "episodes      2" in out and f"{run_dir / 'episode0.png'}" in out
    for e in store.episodes:
        t = store.read_episode(e.episode_id)
        assert t.column("source").to_pylist() == ["demo"] * t.num_rows
        assert t.column("success").to_pylist()[-1] and 0 < e.env_steps <= 220
        assert frames(t, "head", 64).std() > 10
    png = Image.open(run_dir / "episode0.png")
    assert png.height > 2 * 64 and png.width >= 64 * min(16, store.episodes[0].chunks + 1)
    # the two episodes came from different init states: different first frames
    first = [frames(store.read_episode(k), "head", 64)[0] for k in range(2)]
    assert not np.array_equal(first[0], first[1])
