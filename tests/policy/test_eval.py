"""Policy evaluation on real LIBERO through env-runner Ray actors, and its error cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_ray.cli import main
from mbpo_ray.config import EvalConfig
from mbpo_ray.policy import ActionBins, build_policy, save_policy
from mbpo_ray.policy.evaluate import eval_plan
from tests.policy.conftest import tiny_policy_config

IMAGE = 32  # the store resolution the checkpoint says it was trained at: the env renders at it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    bins = ActionBins.fit(np.random.default_rng(0).uniform(-0.3, 0.3, (400, 7)), 10)
    policy = build_policy(tiny_policy_config(), bins)
    path = tmp_path_factory.mktemp("policy") / "ck"
    save_policy(policy, path, {"demos": {}, "store_image_size": IMAGE, "suite": "libero_spatial"})
    return path


def test_plan_follows_the_protocol():
    plan = eval_plan(EvalConfig(tasks="2,0", episodes_per_task=3, videos=3, seed=1))
    assert [(j["task_id"], j["init_state"]) for j in plan] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    assert {(j["task_id"], j["init_state"]) for j in plan if j["record"]} == {(0, 0), (2, 0), (0, 1)}
    assert all(j["greedy"] for j in plan) and len({j["seed"] for j in plan}) == 6
    assert not any(j["greedy"] for j in eval_plan(EvalConfig(sample=True)))


@pytest.mark.libero
def test_eval_one_init_state_through_an_env_runner_actor(ray_cluster, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", str(checkpoint), "--suite", "libero_spatial", "--tasks", "0", "--episodes-per-task", "1",
                 "--workers", "1", "--videos", "1", "--out", str(out), "--eval.max_steps=20"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    assert report["episodes"] == 1 and report["tasks"]["0"]["episodes"] == 1
    assert report["success_rate"] == 0.0 and report["tasks"]["0"]["successes"] == []  # 20 steps: no time to solve
    [ep] = report["episodes_detail"]
    assert (ep["init_state"], ep["steps"]) == (0, 20)  # two chunks of 10, the policy called once per chunk
    assert "black bowl" in report["tasks"]["0"]["instruction"] and report["greedy"]
    [video] = report["videos"]
    gif = Image.open(out / video)
    assert gif.size == (2 * IMAGE, IMAGE) and gif.n_frames == 3  # reset + 2 chunk ends, head | wrist
    assert "overall 0.0% over 1 episodes" in capsys.readouterr().out


@pytest.mark.libero
def test_a_job_run_again_stores_its_episode_once(checkpoint, tmp_path):
    """A real-data job carries an episode id: run again (its runner died after the append, or a resumed
    run repeats the iteration) it finds its episode in the store and neither runs nor appends again."""
    from actors.env_runner import EnvRunner
    from mbpo_ray.config import build_config
    from mbpo_ray.replay import ReplayStore, StoreSpec

    store = ReplayStore.create(str(tmp_path / "store"), StoreSpec(image_size=IMAGE, chunk_size=10))
    runner = EnvRunner(build_config(None, {"env": {"image_size": IMAGE, "max_steps": 20}}).to_dict(), store.root)
    job = {"checkpoint": str(checkpoint), "suite": "libero_spatial", "task_id": 0, "init_state": 1, "greedy": False,
           "seed": 3, "to_store": True, "policy_version": 7, "episode_id": "run1-real1-j0"}
    try:
        first = runner.policy_episode(**job)
        again = runner.policy_episode(**job)
        other = runner.policy_episode(**{**job, "episode_id": "run1-real1-j1"})
    finally:
        runner.close()
    ids = [e.episode_id for e in store.refresh().episodes]
    assert ids == ["run1-real1-j0", "run1-real1-j1"]
    assert "stored_before" not in first and again["stored_before"] and "stored_before" not in other
    assert (again["steps"], again["chunks"], again["success"]) == (first["steps"], first["chunks"], first["success"])


def test_eval_errors(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "eval")
    assert main(["eval", str(tmp_path / "missing"), "--out", out]) == 2
    assert "is not a policy checkpoint" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--tasks", "0-10", "--out", out]) == 2
    assert "eval.tasks='0-10' is not allowed: libero_spatial has tasks 0-9" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--workers", "0", "--out", out]) == 2
    assert "eval.workers=0 is not allowed" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--episodes-per-task", "51", "--out", out]) == 2
    assert "eval.episodes_per_task=51 is not allowed" in capsys.readouterr().err
