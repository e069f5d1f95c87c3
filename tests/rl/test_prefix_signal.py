"""How much a branch's prefix decides: the variance split and the concordance of benchmarks/prefix_signal.py,
and a prefix with its continuations run in real LIBERO."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.prefix_signal import concordance, summarize, variance_split


def test_outcomes_fixed_by_their_prefix_are_all_decided():
    y = np.array([[[1, 1], [0, 0], [1, 1], [0, 0]]], bool)  # each prefix's continuations agree
    total, decided = variance_split(y)
    assert total[0] == pytest.approx(1 / 3) and decided[0] == pytest.approx(total[0])


def test_the_split_recovers_a_known_share_and_finds_none_in_noise():
    rng = np.random.default_rng(0)
    q = rng.choice([0.2, 0.8], (400, 8, 1))  # P(success | prefix): Var 0.09 of a total 0.25
    total, decided = variance_split(rng.random((400, 8, 4)) < q)
    assert decided.sum() / total.sum() == pytest.approx(0.36, abs=0.05)
    total, decided = variance_split(rng.random((400, 8, 2)) < 0.5)  # the prefix changes nothing
    assert abs(decided.sum() / total.sum()) < 0.05
    with pytest.raises(ValueError, match="at least 2"):
        variance_split(np.zeros((3, 8, 1), bool))


def test_concordance_counts_only_pairs_whose_continuations_differ():
    p = np.array([[0.0, 0.5, 1.0, 1.0]])  # 5 pairs differ (1.0 vs 1.0 does not count)
    assert concordance(p, p) == (5, 1.0)
    assert concordance(-p, p) == (5, 0.0)
    assert concordance(np.zeros_like(p), p) == (5, 0.5)
    assert np.isnan(concordance(np.zeros((1, 3)), np.ones((1, 3)))[1])


def test_the_summary_splits_the_variance_and_scores_each_feature_with_an_interval():
    rng = np.random.default_rng(1)
    q = rng.choice([0.1, 0.9], (30, 8, 1))
    y = rng.random((30, 8, 2)) < q
    out = summarize(y, np.zeros((30, 8), bool), {"knows P": q[..., 0], "noise": rng.random((30, 8))}, seed=0)
    assert 0.4 < out["decided_share"] < 1.1 and out["decided_share_ci95"][0] < out["decided_share"]
    good, noise = out["concordance"]["knows P"], out["concordance"]["noise"]
    assert good["concordance"] > 0.7 and good["ci95"][0] > 0.6 and good["pairs"] == noise["pairs"] > 0
    assert 0.3 < noise["concordance"] < 0.7 and noise["ci95"][0] < noise["concordance"] < noise["ci95"][1]
    assert good["ci95"][0] > noise["ci95"][1]


def test_pairs_a_finished_prefix_orders_are_also_scored_without_it():
    y = np.array([[[1, 1], [1, 1], [0, 0], [0, 0]]], bool)  # prefix 0 succeeded itself, prefix 1 later
    prefix_ok = np.array([[True, False, False, False]])
    out = summarize(y, prefix_ok, {"f": np.array([[1.0, 0.2, 0.5, 0.5]])}, seed=0)
    assert out["concordance"]["f"]["pairs"] == 4 and out["concordance"]["f"]["concordance"] == 0.5
    assert out["concordance_unfinished"]["f"] == {"pairs": 2, "starts": 1, "concordance": 0.0, "ci95": [0.0, 0.0]}
    assert out["features"]["f"] == [[1.0, 0.2, 0.5, 0.5]]


def test_plot_only_redraws_the_png_from_the_json(tmp_path):
    import json
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    y = rng.random((6, 4, 2)) < 0.4
    out = summarize(y, np.zeros((6, 4), bool), {"feature": rng.random((6, 4))}, seed=0)
    out["concordance"]["no interval"] = {"pairs": 3, "concordance": 0.5}  # as results written before intervals
    result = {**out, "chunks_to_go": list(range(1, 7)), "n_prefix": 2, "group_size": 4, "continuations": 2}
    (tmp_path / "ps.json").write_text(json.dumps(result))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, "benchmarks/prefix_signal.py", "--plot-only", "--name", "ps"], cwd=root,
                         env={**os.environ, "MBPO_RESULTS_DIR": str(tmp_path)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "ps.png").stat().st_size > 10_000


@pytest.mark.libero
def test_a_prefix_and_its_continuations_run_from_a_recorded_state():
    from mbpo_ray.config import EnvConfig
    from mbpo_ray.envs.libero_env import LiberoEnv
    from mbpo_ray.rl.online import run_prefix_continuations
    from tests.rl.conftest import tiny_policy

    policy = tiny_policy()
    with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=32, chunk_size=2, max_steps=20)) as env:
        env.reset(0, render=False)
        start = env.raw.sim.get_state().flatten().copy()
        a, b = (run_prefix_continuations(env, policy, start, 2, 3, 3, seed=7) for _ in range(2))
        one = run_prefix_continuations(env, policy, start, 2, 3, 2, seed=7)  # the budget ends with the prefix
    assert len(a["eventual"]) == 3 and not a["prefix_success"] and not any(a["eventual"])  # a random policy
    assert a["steps"] == 2 * 2 + 3 * 2  # the prefix's 2 chunks, then 1 chunk per continuation
    assert one["steps"] == 4 and one["eventual"] == [False] * 3
    assert a["goal"].offset_xy == b["goal"].offset_xy and a["value"] == b["value"]  # seeded
    assert a["goal"].offset_xy > 0.03 and a["task_id"] == 0
    assert a["final_head"].shape == a["final_wrist"].shape == (32, 32, 3) and "bowl" in a["instruction"]
