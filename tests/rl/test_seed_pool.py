"""benchmarks/seed_pool.py: two methods paired per seed on the same init states, and pooled over seeds."""

from __future__ import annotations

import json

import pytest

from benchmarks import seed_pool


def run_folder(path, successes: list[bool], iteration: int = 2):
    """A train run's folder with an early evaluation (all failures) and a last one with ``successes``."""
    (path / "eval").mkdir(parents=True)
    for it, wins in ((1, [False] * len(successes)), (iteration, successes)):
        eps = [{"task_id": i % 2, "init_state": i // 2, "success": w} for i, w in enumerate(wins)]
        (path / "eval" / f"iter_{it}.json").write_text(json.dumps({"iteration": it, "episodes": eps}))
    return str(path)


def eval_report(path, successes: list[bool]):
    tasks = {t: {"episodes": len(successes) // 2, "successes": [i // 2 for i, w in enumerate(successes) if w and i % 2 == t]}
             for t in (0, 1)}
    path.write_text(json.dumps({"suite": "libero_spatial", "checkpoint": "p", "tasks": tasks}))
    return str(path)


def test_seeds_are_paired_by_position_and_pooled(tmp_path):
    # seed 0: b wins 3 pairs a wins 1; seed 1: b wins 2, a wins 0 (20 episodes each)
    a0 = [True] * 10 + [False] * 10
    b0 = [True] * 9 + [False] + [True] * 3 + [False] * 7
    a1 = [False] * 20
    b1 = [True] * 2 + [False] * 18
    a = [run_folder(tmp_path / "a0", a0), run_folder(tmp_path / "a1", a1)]
    b = [run_folder(tmp_path / "b0", b0), run_folder(tmp_path / "b1", b1)]
    r = seed_pool.compare(a, b, resamples=500)
    assert r["pairs"] == 20 and r["seeds"] == 2
    assert r["per_task"][0] == {"a": 0.25, "b": pytest.approx(0.4)}
    assert [(s["only_first"], s["only_second"]) for s in r["per_seed"]] == [(1, 3), (0, 2)]
    assert r["per_seed"][0]["a"] == 0.5 and r["per_seed"][0]["b"] == 0.6  # the last evaluation, not the first
    assert (r["pooled"]["only_first"], r["pooled"]["only_second"]) == (1, 5)
    assert r["pooled"]["p_value"] == pytest.approx(14 / 64)  # two-sided exact sign test, 1 of 6
    assert r["mean"]["difference"] == pytest.approx(0.1)
    lo, hi = r["mean"]["difference_95"]
    assert lo <= 0.1 <= hi and hi - lo > 0


def test_one_run_on_a_side_is_paired_with_every_seed_of_the_other(tmp_path):
    sft = eval_report(tmp_path / "eval.json", [True, False] * 10)  # task 0 always, task 1 never
    runs = [run_folder(tmp_path / f"r{i}", [True] * 20) for i in range(3)]
    r = seed_pool.compare([sft], runs, resamples=200)
    assert r["seeds"] == 3 and r["pooled"]["only_second"] == 30 and r["pooled"]["only_first"] == 0
    assert [s["a"] for s in r["per_seed"]] == [0.5] * 3 and r["mean"]["difference"] == pytest.approx(0.5)
    lo, hi = r["mean"]["difference_95"]
    assert 0.2 <= lo < 0.5 < hi <= 0.8


def test_mismatched_or_unfinished_runs_are_refused(tmp_path):
    runs = [run_folder(tmp_path / f"r{i}", [True] * 4) for i in range(3)]
    with pytest.raises(SystemExit, match="as many runs each"):
        seed_pool.compare(runs[:2], runs, resamples=200)
    (tmp_path / "empty" / "eval").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no evaluation"):
        seed_pool.compare([str(tmp_path / "empty")], runs[:1], resamples=200)
    with pytest.raises(SystemExit, match="neither a run folder"):
        seed_pool.compare([str(tmp_path / "missing.json")], runs[:1], resamples=200)
    (tmp_path / "r0" / "eval" / "iter_2.json").write_text('{"iteration": 2, "epis')  # cut short
    with pytest.raises(SystemExit, match="not readable JSON"):
        seed_pool.compare(runs[:1], runs[1:2], resamples=200)
