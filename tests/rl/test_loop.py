"""The distributed loop end to end on a real local Ray cluster: vLLM world-model worker, two DDP learner
ranks, a real LIBERO env runner, the world-model learner; checkpoint and resume; the worker pool's
scaling, late joiners on the newest weights, and a replica killed mid-call."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mbpo_ray.cli import main
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.online import Trajectory, trajectories_to_branches
from mbpo_ray.weights import WeightStore
from tests.conftest import alive_actors

SMALL = ["--mbpo.worker_cpus=0.25", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.25"]


def train_logs(argv: list[str], out, capsys) -> list[dict]:
    """`mbpo-ray train ARGV` (it must succeed) and the rows of its ``metrics.jsonl``."""
    code = main(["train", *argv])
    assert code == 0, capsys.readouterr().err
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


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
    kept = sorted(p.name for p in (out / "policies").iterdir())
    assert len(kept) <= 2 and not any((out / "policies" / k / "optimizer.pt").exists() for k in kept)

    at_two = root / "checkpoint_at_two"
    shutil.copytree(out / "checkpoint", at_two)
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    # as if a world-model finetune after the checkpoint had published version 2 before a crash
    later, _ = weights.load("world_model", 1)
    weights.publish("world_model", {k: v + 1.0 for k, v in later.items()}, 2)
    code = main(["train", "--resume", str(out), "--mbpo.iterations=3", *common])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2, 3]
    # the weights the batch in flight was imagined with (version 1) were republished as 3, the checkpoint's
    # as 4, the resumed update made 5; that batch was imagined again on them, as in the uninterrupted run
    assert logs[-1]["policy_version"] == 5 and WeightStore(str(out / "weights")).latest("policy") == 5
    assert logs[-1]["staleness"] == 1
    # the checkpoint's world model is the newest again (version 3), not the later one (2); the batch in
    # flight keeps the one it was imagined with (the starting model, version 0)
    assert weights.latest("world_model") == 3 and logs[-1]["imagine/world_model_version"] == 0
    now, _ = weights.load("world_model", 3)
    assert all(torch.equal(now[k], later[k]) for k in later)

    # a crash after iteration 3 stored its real episode, before its checkpoint: resumed from iteration 2,
    # iteration 3's job finds its episode in the store (stored once) and is logged once
    shutil.rmtree(out / "checkpoint")
    shutil.copytree(at_two, out / "checkpoint")
    assert main(["train", "--resume", str(out), "--mbpo.iterations=3", *common]) == 0, capsys.readouterr().err
    mine = [e.episode_id for e in ReplayStore.open(store).episodes if e.episode_id.startswith(run_id)]
    assert sorted(mine) == [f"{run_id}-real{i}-j0" for i in (1, 2, 3)]
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


OVERLAPPED = ["--mbpo.max_staleness=1", "--mbpo.real_every=1", "--mbpo.real_episodes=1", "--env.max_steps=6",
              "--mbpo.wm_finetune_every=1", "--mbpo.wm_finetune_steps=2", "--world_model.engine=vllm"]


@pytest.mark.parametrize("mode", ["sequential", "overlapped"])
def test_resume_repeats_the_uninterrupted_run(ray_cluster, loop_inputs, tmp_path, capsys, mode):
    """Resuming from the checkpoint of iteration 2 gives, at iteration 3, the policy (and optimizer) of an
    uninterrupted run with the same seed: imagination seeds, minibatches and RNG all come from the
    checkpointed driver state, and every imagination request names its weight versions and store parts.
    ``overlapped``: the next batch is imagined (vLLM) while the learner updates (max_staleness=1), real
    episodes are appended and the world model is finetuned every iteration; the batch in flight at the
    checkpoint is imagined again on the weights it was first imagined with."""
    from safetensors.torch import load_file

    _, shared, policy, wm = loop_inputs
    common = ["--mbpo.tasks=0", "--mbpo.branches=4", "--mbpo.n_chunks=2", "--mbpo.learners=2",
              "--mbpo.max_staleness=0", "--mbpo.real_every=0", "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=4",
              "--mbpo.updates_per_batch=2", "--mbpo.checkpoint_every=1", "--mbpo.actor_lr=1e-3",
              "--world_model.engine=hf", *SMALL, *(OVERLAPPED if mode == "overlapped" else [])]
    whole, part = tmp_path / "whole", tmp_path / "part"
    stores = {r: str(tmp_path / f"store_{r.name}") for r in (whole, part)}  # the same data for both runs
    for s in stores.values():
        shutil.copytree(shared, s)
    args = ["train", "--policy", policy, "--world-model", wm]
    assert main([*args, "--store", stores[whole], "--out", str(whole), "--mbpo.iterations=3", *common]) == 0, \
        capsys.readouterr().err
    assert main([*args, "--store", stores[part], "--out", str(part), "--mbpo.iterations=2", *common]) == 0, \
        capsys.readouterr().err
    after_two = load_file(str(part / "checkpoint" / "policy" / "model.safetensors"))
    with open(part / "metrics.jsonl", "a") as f:  # as if iteration 3 had been logged before a crash
        f.write(json.dumps({"iteration": 3, "ppo/loss": 0.0}) + "\n")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(part / "tb")) as tb:  # ... and written to TensorBoard
        tb.add_scalar("ppo/loss", -1.0, 3)
    # the resume names only what it changes: objective, branch length, engine, rates come from run.json
    assert main(["train", "--resume", str(part), "--mbpo.iterations=3"]) == 0, capsys.readouterr().err
    assert "changed by this command: mbpo.iterations 2 -> 3" in capsys.readouterr().err

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
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(part / "tb")).Reload().Scalars("ppo/loss")
    assert [e.step for e in scalars] == [1, 2, 3] and scalars[-1].value == pytest.approx(logs[1][2]["ppo/loss"])
    if mode == "overlapped":
        assert [x["staleness"] for x in logs[0]] == [0, 1, 1] == [x["staleness"] for x in logs[1]]
        wa = load_file(str(whole / "checkpoint" / "world_model" / "model" / "model.safetensors"))
        wb = load_file(str(part / "checkpoint" / "world_model" / "model" / "model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the finetuned world models agree too
        ids = {r: json.loads((r / "run.json").read_text())["run_id"] for r in (whole, part)}
        real = [[e for e in ReplayStore.open(stores[r]).episodes if e.episode_id.startswith(ids[r])] for r in ids]
        assert [len(x) for x in real] == [3, 3]  # one real episode per iteration, none twice
        assert [(e.success, e.env_steps) for e in real[0]] == [(e.success, e.env_steps) for e in real[1]]


def test_train_refuses_what_the_cluster_cannot_place(ray_cluster, loop_inputs, tmp_path, capsys):
    _, store, policy, wm = loop_inputs
    out = tmp_path / "run"
    code = main(["train", "--policy", policy, "--world-model", wm, "--store", store, "--out", str(out),
                 "--mbpo.worker_cpus=2"])
    err = capsys.readouterr().err
    assert code == 2 and "the loop reserves 5 CPU" in err and "but the cluster has 2" in err, err
    assert not out.exists()  # refused before anything was written


def _alive(ray_cluster) -> list[str]:
    return alive_actors({"PolicyLearner", "WorldModelLearner", "WorldModelWorker", "EnvRunner"})


def test_a_run_that_fails_leaves_no_actor_running(ray_cluster, loop_inputs, tmp_path, monkeypatch):
    """A failure in the driver after every actor has started (learner ranks, the world-model learner,
    replicas, env runners): all of them are gone when train_mbpo raises."""
    import time

    from mbpo_ray import mbpo
    from mbpo_ray.config import build_config

    _, store, policy, wm = loop_inputs
    before = _alive(ray_cluster)

    def fail(self, *a, **k):
        assert len(_alive(ray_cluster)) >= len(before) + 5  # 2 ranks, a replica, a runner, the wm learner
        raise RuntimeError("the driver failed")

    monkeypatch.setattr(mbpo._Loop, "sample", fail)
    cfg = build_config(None, {"mbpo": {"tasks": "0", "branches": 4, "learners": 2, "real_every": 1, "real_episodes": 1,
                                       "wm_finetune_every": 1, "worker_cpus": 0.25, "learner_cpus": 0.25,
                                       "runner_cpus": 0.25, "wm_learner_cpus": 0.25},
                              "world_model": {"engine": "hf"}})
    with pytest.raises(RuntimeError, match="the driver failed"):
        mbpo.train_mbpo(cfg, policy, wm, store, str(tmp_path / "run"))
    deadline = time.time() + 60
    while _alive(ray_cluster) != before and time.time() < deadline:
        time.sleep(1)
    assert _alive(ray_cluster) == before


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
    logs = train_logs(["--policy", policy, "--store", store, "--out", str(out), "--mbpo.mode=online",
                       "--mbpo.objective=grpo", "--mbpo.group_size=2", "--mbpo.branches=2", "--mbpo.learners=1",
                       "--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.real_every=0", "--mbpo.eval_episodes=1",
                       "--mbpo.env_runners=1", "--env.max_steps=6", *SMALL], out, capsys)
    assert [x["real/env_steps"] for x in logs] == [12, 24]  # 2 episodes x 6 steps per iteration
    assert all(x["imagine/chunk_transitions"] == 6 for x in logs)  # 3 chunks of 2 actions per episode
    assert all("pool/workers" in x and x["staleness"] == 0 for x in logs) and "eval/success" in logs[-1]
    new = [e for e in ReplayStore.open(store).episodes if e.episode_id not in before]
    assert len(new) == 4 and all(e.source == "real" for e in new)
    assert not (out / "checkpoint" / "world_model").exists()


@pytest.mark.libero
def test_simulator_branches_run_in_libero_from_the_stored_states(ray_cluster, loop_inputs, tmp_path, capsys):
    """mbpo.mode=simulator: no world model; the branches VLA-MBPO would imagine (group_size from each
    drawn start state, n_chunks long) run in LIBERO from the start's recorded simulator state, the
    policy acting on the real frames; nothing is appended to the store, the env steps are counted."""
    from mbpo_ray.config import EnvConfig
    from mbpo_ray.envs.libero_env import LiberoEnv, Observation
    from mbpo_ray.policy import load_policy
    from mbpo_ray.policy.base import Observations
    from mbpo_ray.policy.evaluate import run_policy_episode
    from mbpo_ray.rl.online import run_policy_branch

    _, _, policy_dir, _ = loop_inputs
    uri = str(tmp_path / "store")
    store = ReplayStore.create(uri, ReplayStore.open(loop_inputs[1]).spec)
    policy = load_policy(policy_dir)
    with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=32, chunk_size=2, max_steps=6)) as env:
        run_policy_episode(env, policy, 0, greedy=False, seed=1, store=store)  # real states to branch from
        state = store.read_start_states(np.array([0]), np.array([1]), ["sim_state"]).column("sim_state")[0].as_py()
        a, b = (run_policy_branch(env, policy, np.asarray(state), 2, seed=5) for _ in range(2))
        assert a["steps"] == 4 and a["trajectory"].actions.shape == (2, 2, 7) and not a["success"]
        np.testing.assert_array_equal(a["trajectory"].actions, b["trajectory"].actions)  # seeded
        final = Observations.single(Observation(a["trajectory"].final_head, a["trajectory"].final_wrist,
                                                np.zeros(8, np.float32)), env.instruction)
        assert abs(a["last_value"] - float(policy.act(final, greedy=True).value[0])) < 1e-5  # critic bootstrap
    out = tmp_path / "simulator"
    logs = train_logs(["--policy", policy_dir, "--store", uri, "--out", str(out), "--mbpo.mode=simulator",
                       "--mbpo.group_size=2", "--mbpo.branches=4", "--mbpo.n_chunks=2", "--mbpo.learners=1",
                       "--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.eval_episodes=0", "--mbpo.env_runners=1",
                       "--mbpo.minibatch_size=4", "--env.max_steps=6", *SMALL], out, capsys)
    assert [x["real/env_steps"] for x in logs] == [16, 32]  # 4 branches x 2 chunks x 2 actions
    assert all(x["imagine/chunk_transitions"] == 8 and x["staleness"] == 0 for x in logs)
    assert all(sum(v for k, v in x.items() if k.startswith("imagine/starts_to_go")) == 4 for x in logs)
    assert len(ReplayStore.open(uri).episodes) == 1 and not (out / "checkpoint" / "world_model").exists()


def test_trajectories_become_branches():
    def traj(t: int, success: bool) -> Trajectory:
        z = np.zeros((t, 4, 4, 3), np.uint8)
        return Trajectory(z, z, np.ones((t, 2, 7), np.float32), np.full((t, 2, 7), -1.0, np.float32),
                          np.arange(t, dtype=np.float32), z[0], z[0], success)

    br = trajectories_to_branches([traj(3, True), traj(1, False)], ["a", "b"], np.array([0, 0]))
    assert br.valid.tolist() == [[True, True, True], [True, False, False]]
    assert br.terminal.tolist() == [[False, False, True], [False, False, False]] and br.reward[0, 2] == 1.0
    assert (br.last_value == 0).all() and br.value[0].tolist() == [0, 1, 2] and list(br.group) == [0, 0]
    # simulator branches: one that did not succeed bootstraps from the critic at its last observation
    sim = trajectories_to_branches([traj(2, False), traj(1, True)], ["a", "b"], np.array([0, 0]), np.array([0.4, 0.0]))
    assert sim.last_value.tolist() == pytest.approx([0.4, 0.0]) and sim.terminal[1, 0] and not sim.terminal[0].any()


def test_simulator_jobs_carry_each_start_s_state_and_a_seed_of_its_own():
    import pyarrow as pa

    from mbpo_ray.rl.online import simulator_jobs

    table = pa.table({"task_id": [1, 1, 3], "sim_state": [[0.5, 1.0], [0.5, 1.0], [2.0]]})
    jobs = simulator_jobs("ckpt", "libero_spatial", table, seed=7, n_chunks=2)
    assert [j["task_id"] for j in jobs] == [1, 1, 3] and jobs[2]["sim_state"].tolist() == [2.0]
    assert len({j["seed"] for j in jobs}) == 3  # the same start twice: two different branches
    assert [j["seed"] for j in jobs] == [j["seed"] for j in simulator_jobs("ckpt", "libero_spatial", table, 7, 2)]
    assert all(j["n_chunks"] == 2 and j["checkpoint"] == "ckpt" for j in jobs)
