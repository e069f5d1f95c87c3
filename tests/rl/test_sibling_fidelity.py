"""benchmarks/sibling_fidelity.py: sibling branches read back by group, the own-vs-sibling PSNR margin,
and the reward's ordering, on hand-made arrays and a tiny world model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.sibling_fidelity import (
    codec_views,
    group_mean_ci,
    imagine,
    load_siblings,
    reward_report,
    sibling_psnr,
    view_report,
)
from mbpo_ray.replay import EpisodeBuilder, ReplayStore
from tests.conftest import random_obs
from tests.rl.conftest import INSTRUCTIONS, SPEC

PLAN = [(0, "e0:1", 0, [2, 2, 2]), (0, "e1:2", 1, [2, 1, 2]), (1, "e0:1", 0, [2, 2]), (1, "e2:0", 1, [2, 2])]


def _branch_store(path, plan=PLAN) -> ReplayStore:
    """Collection 0: groups from starts e0:1 and e1:2 (3 branches each, e1:2's second succeeds at its
    first step); collection 1: one group from e0:1 (its start is collection 0's too) and one from e2:0."""
    store = ReplayStore.create(str(path), SPEC)
    rng = np.random.default_rng(0)
    for seed, start, g, lengths in plan:
        first = random_obs(rng, SPEC)
        for k, n in enumerate(lengths):
            b = EpisodeBuilder(SPEC, suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0], source="branch",
                               episode_id=f"{start}~s{seed}g{g}b{k}")
            for c in range(n):
                done = n == 1
                b.add_chunk(first if c == 0 else random_obs(rng, SPEC), rng.uniform(-0.5, 0.5, (2, 7)), float(done),
                            done, done, rng.standard_normal(5))
            store.append(b.finish(random_obs(rng, SPEC)))
    return store


def test_siblings_are_read_by_group_and_a_training_collection_s_starts_left_out(tmp_path):
    store = _branch_store(tmp_path / "s")
    sb = load_siblings(store, 0)
    assert sb.group.tolist() == [0, 0, 0, 1, 1, 1] and sb.start_ids == ["e0:1", "e1:2"]
    assert sb.valid.tolist() == [[True, True]] * 4 + [[True, False], [True, True]]
    assert sb.success[4].tolist() == [True, False] and sb.success.sum() == 1
    assert (sb.start["head"][0] == sb.start["head"][1]).all()  # siblings share their start view
    assert sb.actions.shape == (6, 2, 2, 7) and sb.real["wrist"].shape == (6, 2, 32, 32, 3)
    assert sb.proprio.shape == (6, 3, 8) and (sb.proprio[0, 0] == sb.proprio[1, 0]).all()  # the pose too
    assert (sb.proprio[4, 2] == 0).all() and (sb.proprio[4, 1] != 0).any()  # up to the branch's own end
    held_out = load_siblings(store, 1, exclude_seed=0)
    assert held_out.start_ids == ["e2:0"] and len(held_out.group) == 2
    assert load_siblings(store, 1, exclude_seed=[0]).start_ids == ["e2:0"]
    with pytest.raises(SystemExit, match=r"outside the starts of collection\(s\) \[0, 1\]"):
        load_siblings(store, 1, exclude_seed=[0, 1])  # every start of collection 1 was a training one
    both = load_siblings(store, [0, 1])  # collection 1's group from e0:1 is a start collection 0 judged already
    assert both.start_ids == ["e0:1", "e1:2", "e2:0"] and both.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert load_siblings(store, [1, 0]).start_ids == ["e0:1", "e2:0", "e1:2"]  # the first collection keeps it
    with pytest.raises(SystemExit, match="no sibling groups of collection seed 3"):
        load_siblings(store, 3)


def test_a_start_drawn_twice_by_one_collection_is_one_group(tmp_path):
    twice = PLAN[:2] + [(0, "e2:0", 2, [2, 2]), (0, "e0:1", 3, [2, 2])]  # e0:1 drawn again, after e2:0
    sb = load_siblings(_branch_store(tmp_path / "s", twice), 0)
    assert sb.start_ids == ["e0:1", "e1:2", "e2:0"]
    assert sb.group.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]  # the bootstrap resamples three starts


def test_the_margin_is_positive_when_frames_follow_the_actions_and_negative_when_swapped():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (4, 2, 8, 8, 3), dtype=np.uint8)
    group, valid = np.array([0, 0, 1, 1]), np.ones((4, 2), bool)
    own, sib = sibling_psnr(real, real, group, valid)
    assert (own - sib > 20).all()  # the branch's own frame exactly
    swapped = real[[1, 0, 3, 2]]
    own, sib = sibling_psnr(swapped, real, group, valid)
    assert (own - sib < -20).all()
    valid[3, 1] = False
    own, sib = sibling_psnr(real, real, group, valid)
    assert np.isnan(own[3, 1]) and np.isnan(sib[2, 1]) and np.isfinite(sib[2, 0])  # no sibling ran that step
    m, ci = group_mean_ci(np.full((4, 2), 1.5), group, boot=200, seed=0)
    assert m == 1.5 and ci == [1.5, 1.5]


def test_a_reward_that_knows_the_outcome_orders_the_siblings(tmp_path):
    sb = load_siblings(_branch_store(tmp_path / "s"), 0)
    right = reward_report(sb.success.astype(float), sb, gamma=0.99)
    assert right["auc"] == 1.0 and right["hard"]["pair_accuracy"] == 1.0 and right["hard"]["pairs"] == 2
    wrong = reward_report(1.0 - sb.success, sb, gamma=0.99)
    assert wrong["auc"] == 0.0 and wrong["hard"]["pair_accuracy"] == 0.0


def test_a_world_model_imagines_every_sibling_open_loop(tmp_path, tiny_world_model):
    sb = load_siblings(_branch_store(tmp_path / "s"), 0)
    runs, size = imagine(tiny_world_model, sb, [0.0, 1.0], seed=3, engine="hf")
    assert set(runs) == {"greedy", "T1"} and size == 16
    assert runs["greedy"].head.shape == (6, 2, 16, 16, 3) and runs["T1"].p_yes.shape == (6, 2)
    row, margin = view_report(runs["greedy"].head, sb, "head", size, boot=100, seed=0)
    assert margin.shape == (6, 2) and np.isnan(margin[4, 1]) and len(row["margin_by_step"]) == 2
    assert row["margin_ci95"][0] <= row["margin"] <= row["margin_ci95"][1]


def test_the_codec_ceiling_renders_each_branch_from_its_own_real_codes(tmp_path, tiny_world_model):
    from mbpo_ray.world_model.tokenizer import ImageTokenizer, paste_kept, resize_frames

    sb = load_siblings(_branch_store(tmp_path / "s"), 0)
    sb.real["head"][0] = sb.start["head"][0]  # branch 0's head view never changes from its start
    views, size = codec_views(f"{tiny_world_model}/tokenizer", sb)
    assert size == 16 and views["head"].shape == views["wrist"].shape == (6, 2, 16, 16, 3)
    start = resize_frames(sb.start["head"][:1], size)
    assert (views["head"][0] == start).all()  # every code kept: the start view's own pixels, at every step
    tok = ImageTokenizer.load(f"{tiny_world_model}/tokenizer")
    real = sb.real_at("wrist", size)
    first = tok.encode(real[:, 0])
    expected = paste_kept(tok.decode(first), resize_frames(sb.start["wrist"], size), first,
                          tok.encode(resize_frames(sb.start["wrist"], size)))
    assert (views["wrist"][:, 0] == expected).all()
    row, _ = view_report(views["head"], sb, "head", size, boot=50, seed=0)
    assert np.isfinite(row["margin"])


def test_nothing_to_judge_or_a_missing_tokenizer_is_one_clear_error(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = [str(Path(__file__).parents[2] / "benchmarks" / "sibling_fidelity.py"), "--store", str(tmp_path),
              "--branches-seed", "1"]
    for extra, says in (([], "nothing to judge"), (["--codec", str(tmp_path / "none")], "no such folder")):
        r = subprocess.run([sys.executable, *script, *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
