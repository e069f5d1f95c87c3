"""The distributed loop end to end on a real local Ray cluster: vLLM world-model worker, two DDP learner
ranks, a real LIBERO env runner, the world-model learner; checkpoint and resume; the worker pool's
scaling, late joiners on the newest weights, and a replica killed mid-call."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mbpo_ray.cli import main
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.online import Trajectory, trajectories_to_branches
from mbpo_ray.weights import WeightStore

SMALL = ["--mbpo.worker_cpus=0.25", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.25"]


@pytest.mark.libero
def test_loop_checkpoint_and_resume(ray_cluster, loop_inputs, capsys):
    root, store, policy, wm = loop_inputs
    out = root / "run"
    common = ["--mbpo.tasks=0", "--mbpo.branches=4", "--mbpo.n_chunks=2", "--mbpo.learners=2", "--mbpo.real_every=1",
              "--mbpo.real_episodes=1", "--mbpo.eval_episodes=1", "--mbpo.minibatch_size=4", "--mbpo.updates_per_batch=2",
              "--mbpo.wm_finetune_every=2", "--mbpo.wm_finetune_steps=2", "--mbpo.checkpoint_every=1",
              "--env.max_steps=6", "--world_model.engine=vllm", *SMALL]
    code = main(["train", "--policy", policy, "--world-model", wm, "--store", store, "--out", str(out),
                 "--mbpo.iterations=2", *common])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2] and [x["policy_version"] for x in logs] == [1, 2]
    assert all(x["staleness"] <= 1 and x["imagine/chunk_transitions"] > 0 for x in logs)
    assert all(x["learner/rank_divergence"] == 0.0 for x in logs)  # the two DDP ranks stay identical
    assert logs[0]["staleness"] == 0  # the first batch was imagined before any update
    assert "eval/success" in logs[-1] and "world_model/head" in logs[-1] and logs[-1]["real/env_steps"] == 12
    weights = WeightStore(str(out / "weights"))
    assert weights.latest("policy") == 2 and weights.latest("world_model") == 1
    real = [e for e in ReplayStore.open(store).episodes if e.source == "real"]
    assert len(real) == 2 and all(e.env_steps == 6 for e in real)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 2 and state["version"] == 2
    assert (out / "tb").is_dir() and "TensorBoard" in capsys.readouterr().out

    code = main(["train", "--resume", str(out), "--mbpo.iterations=3", *common])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2, 3]
    # the checkpoint's weights were republished as version 3, the resumed update made version 4
    assert logs[-1]["policy_version"] == 4 and WeightStore(str(out / "weights")).latest("policy") == 4


def test_resume_repeats_the_uninterrupted_run(ray_cluster, loop_inputs, tmp_path, capsys):
    """Resuming from the checkpoint of iteration 2 gives, at iteration 3, the policy (and optimizer) of an
    uninterrupted run with the same seed: imagination seeds, minibatches and RNG all come from the
    checkpointed driver state. Imagination waits for each update (max_staleness=0), so no race decides
    which policy version a batch is imagined with."""
    from safetensors.torch import load_file

    _, store, policy, wm = loop_inputs
    common = ["--mbpo.tasks=0", "--mbpo.branches=4", "--mbpo.n_chunks=2", "--mbpo.learners=2",
              "--mbpo.max_staleness=0", "--mbpo.real_every=0", "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=4",
              "--mbpo.updates_per_batch=2", "--mbpo.checkpoint_every=1", "--mbpo.actor_lr=1e-3",
              "--world_model.engine=hf", *SMALL]
    whole, part = tmp_path / "whole", tmp_path / "part"
    args = ["train", "--policy", policy, "--world-model", wm, "--store", store]
    assert main([*args, "--out", str(whole), "--mbpo.iterations=3", *common]) == 0, capsys.readouterr().err
    assert main([*args, "--out", str(part), "--mbpo.iterations=2", *common]) == 0, capsys.readouterr().err
    after_two = load_file(str(part / "checkpoint" / "policy" / "model.safetensors"))
    assert main(["train", "--resume", str(part), "--mbpo.iterations=3", *common]) == 0, capsys.readouterr().err

    a = load_file(str(whole / "checkpoint" / "policy" / "model.safetensors"))
    b = load_file(str(part / "checkpoint" / "policy" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert any(not torch.equal(a[k], after_two[k]) for k in a)  # iteration 3 did change the policy
    opt_a = torch.load(whole / "checkpoint" / "policy" / "optimizer.pt", weights_only=False)["state"]
    opt_b = torch.load(part / "checkpoint" / "policy" / "optimizer.pt", weights_only=False)["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    logs = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (whole, part)]
    assert [x["iteration"] for x in logs[1]] == [1, 2, 3]
    assert logs[0][2]["ppo/loss"] == logs[1][2]["ppo/loss"]


def test_train_refuses_what_the_cluster_cannot_place(ray_cluster, loop_inputs, tmp_path, capsys):
    _, store, policy, wm = loop_inputs
    out = tmp_path / "run"
    code = main(["train", "--policy", policy, "--world-model", wm, "--store", store, "--out", str(out),
                 "--mbpo.worker_cpus=2"])
    err = capsys.readouterr().err
    assert code == 2 and "the loop reserves 5 CPU" in err and "but the cluster has 2" in err, err
    assert not out.exists()  # refused before anything was written


def test_train_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "--policy is required for a new run" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--mbpo.wm_workers_min=3", "--mbpo.wm_workers_max=2"]) == 2
    assert "mbpo.wm_workers_max=2 is not allowed" in capsys.readouterr().err


def test_critic_at_zero_keeps_the_actor(loop_inputs, tmp_path):
    """mbpo.critic_init=zero: the loop starts from a copy whose value is 0 everywhere, actor untouched."""
    import numpy as np

    from mbpo_ray.mbpo import _critic_at_zero
    from mbpo_ray.policy import load_policy, read_policy_meta
    from mbpo_ray.policy.base import Observations
    from tests.conftest import random_obs
    from tests.rl.conftest import SPEC

    _, _, policy_dir, _ = loop_inputs
    copy = _critic_at_zero(policy_dir, tmp_path / "start")
    rng = np.random.default_rng(0)
    frames = [random_obs(rng, SPEC) for _ in range(3)]
    obs = Observations(np.stack([f.head for f in frames]), np.stack([f.wrist for f in frames]),
                       np.zeros((3, 8), np.float32), ["open the top drawer"] * 3)
    (lo, v0), (lc, vc) = load_policy(policy_dir).logits_and_value(obs), load_policy(copy).logits_and_value(obs)
    assert torch.equal(lo, lc) and v0.abs().min() > 0 and torch.equal(vc, torch.zeros(3))
    assert read_policy_meta(copy)["store_image_size"] == read_policy_meta(policy_dir)["store_image_size"]


@pytest.mark.libero
def test_online_rl_learns_from_real_rollouts(ray_cluster, loop_inputs, tmp_path, capsys):
    """mbpo.mode=online: no world model; each iteration the env runner rolls the current policy out in
    real LIBERO (two episodes from one init state, a group), the learner updates on them, the episodes
    are stored and their env steps counted."""
    root, store, policy, _ = loop_inputs
    before = {e.episode_id for e in ReplayStore.open(store).episodes}
    out = tmp_path / "online"
    code = main(["train", "--policy", policy, "--store", store, "--out", str(out), "--mbpo.mode=online",
                 "--mbpo.objective=grpo", "--mbpo.group_size=2", "--mbpo.branches=2", "--mbpo.learners=1",
                 "--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.real_every=0", "--mbpo.eval_episodes=1",
                 "--mbpo.env_runners=1", "--env.max_steps=6", *SMALL])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["real/env_steps"] for x in logs] == [12, 24]  # 2 episodes x 6 steps per iteration
    assert all(x["imagine/chunk_transitions"] == 6 for x in logs)  # 3 chunks of 2 actions per episode
    assert all("pool/workers" in x and x["staleness"] == 0 for x in logs) and "eval/success" in logs[-1]
    new = [e for e in ReplayStore.open(store).episodes if e.episode_id not in before]
    assert len(new) == 4 and all(e.source == "real" for e in new)
    assert not (out / "checkpoint" / "world_model").exists()


def test_trajectories_become_branches():
    def traj(t: int, success: bool) -> Trajectory:
        z = np.zeros((t, 4, 4, 3), np.uint8)
        return Trajectory(z, z, np.ones((t, 2, 7), np.float32), np.full((t, 2, 7), -1.0, np.float32),
                          np.arange(t, dtype=np.float32), z[0], z[0], success)

    br = trajectories_to_branches([traj(3, True), traj(1, False)], ["a", "b"], np.array([0, 0]))
    assert br.valid.tolist() == [[True, True, True], [True, False, False]]
    assert br.terminal.tolist() == [[False, False, True], [False, False, False]] and br.reward[0, 2] == 1.0
    assert (br.last_value == 0).all() and br.value[0].tolist() == [0, 1, 2] and list(br.group) == [0, 0]
