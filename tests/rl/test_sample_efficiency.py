"""benchmarks/sample_efficiency.py's --starts-store: a recorded store's budget, and the guard that keeps
it from being written to."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import sample_efficiency
from mbpo_ray.replay import ReplayStore
from tests.conftest import TINY, random_episode


def test_a_starts_store_budget_counts_the_episodes_of_the_tasks_only(tmp_path):
    rng = np.random.default_rng(0)
    store = ReplayStore.create(str(tmp_path / "s"), TINY)
    for task, chunks, success in ((0, 3, True), (0, 5, False), (1, 4, True), (2, 2, True)):
        store.append(random_episode(rng, chunks=chunks, task_id=task, success=success,
                                    source="demo" if success else "real")[0])
    steps = {e.task_id: 0 for e in store.episodes}
    for e in store.episodes:
        steps[e.task_id] += e.env_steps
    assert steps[0] > 0 and steps[1] > 0
    assert sample_efficiency.store_steps(str(tmp_path / "s"), [0, 1]) == steps[0] + steps[1]
    assert sample_efficiency.store_steps(str(tmp_path / "s"), [5]) == 0


def test_a_starts_store_with_real_data_collection_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    work = tmp_path / "work"
    argv = ["sample_efficiency.py", "--policy", "p", "--sft-eval", "e.json", "--world-model", "wm", "--store", "d",
            "--work", str(work), "--starts-store", str(tmp_path / "recorded"), "--real-every", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="--real-every 0"):
        sample_efficiency.main()
    assert not work.exists()
