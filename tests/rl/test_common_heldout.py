"""benchmarks/common_heldout.py: world models trained on different splits judged on the episodes none of
them trained on, each with its own layout and tokenizer."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from benchmarks.common_heldout import common_heldout, losses
from mbpo_ray.replay import EpisodeBuilder, ReplayStore
from tests.conftest import random_obs
from tests.rl.conftest import INSTRUCTIONS, SPEC


def _store(path) -> ReplayStore:
    """e0, e1 demonstrations and e2, e3 policy rollouts of 3 chunks each."""
    store = ReplayStore.create(str(path), SPEC)
    rng = np.random.default_rng(0)
    for k in range(4):
        b = EpisodeBuilder(SPEC, suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0],
                           source="demo" if k < 2 else "real", episode_id=f"e{k}")
        for _ in range(3):
            b.add_chunk(random_obs(rng, SPEC), rng.uniform(-0.5, 0.5, (2, 7)), 0.0, False, False,
                        rng.standard_normal(5))
        store.append(b.finish(random_obs(rng, SPEC)))
    return store


def _trained_on(tiny_world_model, path, ids) -> str:
    shutil.copytree(tiny_world_model, path)
    (path / "split.json").write_text(json.dumps({"train": ids, "heldout": []}))
    return str(path)


def test_only_episodes_no_model_trained_on_are_judged_by_each_model(tmp_path, tiny_world_model):
    store = _store(tmp_path / "s")
    a = _trained_on(tiny_world_model, tmp_path / "a", ["e0", "e2"])
    b = _trained_on(tiny_world_model, tmp_path / "b", ["e0", "e1"])
    assert common_heldout(store, {"a": a}) == {"demo": ["e1"], "real": ["e3"]}
    assert common_heldout(store, {"a": a, "b": b}) == {"real": ["e3"]}
    out = losses(a, store, {"real": ["e3"]})["real"]
    assert out["transitions"] == 3 and all(math.isfinite(out[k]) and out[k] > 0 for k in ("head", "wrist", "reward"))
    assert losses(b, store, {"real": ["e3"]})["real"] == out  # the same weights on the same episodes
    both = losses(a, store, {"demo": ["e1"], "real": ["e3"]})
    assert both["real"] == out and both["all"]["transitions"] == 6  # a source judged alone or beside another


def test_nothing_left_to_judge_or_no_split_is_one_clear_error(tmp_path, tiny_world_model):
    store = _store(tmp_path / "s")
    every = _trained_on(tiny_world_model, tmp_path / "all", ["e0", "e1", "e2", "e3"])
    with pytest.raises(SystemExit, match="nothing to judge on"):
        common_heldout(store, {"all": every})
    with pytest.raises(SystemExit, match="no split.json there"):
        common_heldout(store, {"bare": tiny_world_model})
