"""Behaviour cloning with a buffer of every success so far (``mbpo.bc_buffer``) and an anchor to the
SFT demonstrations (``mbpo.bc_demo_coef``): what the loop needs to run self-imitation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from learners.imitation import Imitation, branch_rows
from learners.policy_learner import PolicyLearner
from mbpo_ray.config import ConfigError, build_config
from mbpo_ray.policy import read_policy_meta, save_policy
from mbpo_ray.policy.base import Observations
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.synthetic import acted_branches as branches
from tests.rl.test_bc import bc_config, log_likelihood


def test_the_buffer_keeps_earlier_successes_and_drops_the_oldest(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(bc_config(policy_dir, bc_buffer=100), policy_dir, str(tmp_path / "w"), 0, 1)
    first = branches(policy_dir, {1: 1, 3: 0})  # 3 successful chunk steps
    imitated = first.valid & first.terminal.any(1, keepdims=True)
    m = learner.update(first, 1, seed=0)
    assert m["samples"] == 3 and m["buffer_rows"] == 3
    ll = log_likelihood(learner.policy.eval(), first, imitated)
    m = learner.update(branches(policy_dir, {}, seed=1), 2, seed=1)  # no success in this batch
    assert m["samples"] == 3 and m["trained"] == 3 * 3 and m["success_branches"] == 0
    assert log_likelihood(learner.policy.eval(), first, imitated) > ll + 0.05  # still cloning the first batch

    small = PolicyLearner(bc_config(policy_dir, bc_buffer=2), policy_dir, str(tmp_path / "s"), 0, 1)
    assert small.update(first, 1, seed=0)["buffer_rows"] == 2
    kept = small.imitation.buffer.actions
    assert np.array_equal(kept, first.actions[imitated][-2:])  # the newest two rows


def test_the_buffer_is_part_of_the_checkpoint(loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    learner = PolicyLearner(bc_config(policy_dir, bc_buffer=100), policy_dir, str(tmp_path / "w"), 0, 1)
    learner.update(branches(policy_dir, {0: 1, 2: 1}), 1, seed=0)
    ckpt = learner.save(str(tmp_path / "ckpt"))
    resumed = PolicyLearner(bc_config(policy_dir, bc_buffer=100), ckpt, str(tmp_path / "w2"), 0, 1,
                            optimizer_state=f"{ckpt}/optimizer.pt", reference_dir=policy_dir)
    assert len(resumed.imitation.buffer) == len(learner.imitation.buffer) == 4
    assert torch.equal(resumed.imitation.buffer.head, learner.imitation.buffer.head)
    runner_copy = str(tmp_path / "runner")
    learner.save(runner_copy, optimizer=False)  # a policy for the env runners carries no buffer
    assert not list((tmp_path / "runner").glob("bc_buffer*"))


@pytest.fixture
def anchored_policy(loop_inputs, tmp_path):
    """A copy of the loop's store and tiny policy, its policy.json naming the store's 4 episodes as its SFT
    demonstrations (a copy: the loop test appends real episodes, which the shared store must not see)."""
    _, shared, policy_dir, _ = loop_inputs
    store = str(tmp_path / "store")
    shutil.copytree(shared, store)
    out = tmp_path / "policy"
    shutil.copytree(policy_dir, out)
    meta = read_policy_meta(out)
    from mbpo_ray.policy import load_policy

    ids = [e.episode_id for e in ReplayStore.open(store).episodes]
    save_policy(load_policy(out), out, {k: v for k, v in meta.items() if k not in ("policy", "bins")}
                | {"demos": {"0": ids}})
    return store, str(out)


def demo_likelihood(policy, learner) -> float:
    d = learner.imitation.demos
    with torch.no_grad():
        logp, _, _ = policy.evaluate(Observations(d.head.numpy(), d.wrist.numpy(), d.proprio, d.instruction),
                                     torch.from_numpy(d.actions), d.mask)
    return float(logp.mean())


def test_the_demonstration_anchor_clones_the_sft_demonstrations(anchored_policy, tmp_path):
    store, policy_dir = anchored_policy
    cfg = bc_config(policy_dir, bc_demo_coef=1.0, tasks="0")
    learner = PolicyLearner(cfg, policy_dir, str(tmp_path / "w"), 0, 1, store_uri=store)
    assert len(learner.imitation.demos) == 4 * 3  # every chunk row of the 4 episodes
    before = demo_likelihood(learner.policy.eval(), learner)
    m = learner.update(branches(policy_dir, {}), 1, seed=0)  # no success: the anchor alone trains
    assert m["samples"] == 0 and "demo_loss" in m and "loss" not in m
    assert demo_likelihood(learner.policy.eval(), learner) > before + 0.1
    m = learner.update(branches(policy_dir, {1: 0}), 2, seed=0)
    assert m["samples"] == 1 and "loss" in m and "demo_loss" in m

    with pytest.raises(ValueError, match="give the run a store"):
        PolicyLearner(cfg, policy_dir, str(tmp_path / "w2"), 0, 1)
    no_demos = bc_config(policy_dir, bc_demo_coef=1.0, tasks="1")
    with pytest.raises(ValueError, match="names no SFT demonstrations of tasks \\[1\\].*bc_demo_coef=0"):
        PolicyLearner(no_demos, policy_dir, str(tmp_path / "w3"), 0, 1, store_uri=store)


def test_the_null_control_imitates_as_many_branches_chosen_blind(loop_inputs):
    _, _, policy_dir, _ = loop_inputs
    br = branches(policy_dir, {0: 1, 1: 1}, b=8)  # two successes; every branch has 2 valid steps
    size = br.head.shape[2]
    mc = build_config(overrides={"mbpo": {"objective": "bc", "null_control": True}}).mbpo
    truth = branch_rows(br, br.valid & br.terminal.any(1, keepdims=True), size)
    chosen = set()
    for seed in range(6):
        rows = Imitation(mc, size, False, None, 0).add(br, np.random.default_rng(seed))
        assert len(rows) == len(truth) == 4  # as many branches (2) as succeeded
        chosen |= {b for b in range(len(br)) if any(np.array_equal(br.actions[b, 0], a) for a in rows.actions)}
    assert chosen - {0, 1}  # draws that imitate branches which did not succeed


def test_cloning_options_need_the_cloning_objective():
    with pytest.raises(ConfigError, match="mbpo.bc_buffer and mbpo.bc_demo_coef belong to behaviour cloning"):
        build_config(overrides={"mbpo": {"objective": "grpo", "group_size": 2, "bc_demo_coef": 1.0}})
    with pytest.raises(ConfigError, match="mbpo.bc_buffer"):
        build_config(overrides={"mbpo": {"objective": "bc", "bc_buffer": -1}})


def test_real_successes_enter_the_buffer_as_they_are(loop_inputs, tmp_path):
    """mbpo mode's real episodes: the successful ones are kept for cloning, also under the null control."""
    from mbpo_ray.rl.online import Trajectory, trajectories_to_branches

    _, _, policy_dir, _ = loop_inputs
    rng = np.random.default_rng(0)

    def episode(chunks: int, success: bool) -> Trajectory:
        frames = rng.integers(0, 255, (chunks, 32, 32, 3), dtype=np.uint8)
        return Trajectory(frames, frames.copy(), rng.uniform(-0.3, 0.3, (chunks, 2, 7)).astype(np.float32),
                          np.zeros((chunks, 2, 7), np.float32), np.zeros(chunks, np.float32), frames[-1], frames[-1],
                          success)

    br = trajectories_to_branches([episode(3, False), episode(2, True), episode(4, False)], ["open the top drawer"] * 3,
                                  np.arange(3))
    learner = PolicyLearner(bc_config(policy_dir, bc_buffer=100, null_control=True), policy_dir, str(tmp_path / "w"), 0, 1)
    assert learner.add_successes(br) == 2  # the successful episode's 2 chunk steps
    assert np.array_equal(learner.imitation.buffer.actions, br.actions[1, :2])
    assert learner.imitation.buffer.head.shape[1] == learner.policy.cfg.image_size
    without = PolicyLearner(bc_config(policy_dir), policy_dir, str(tmp_path / "w2"), 0, 1)
    assert without.add_successes(br) == 0  # no buffer: nothing outlives its batch


@pytest.mark.libero
def test_cloning_in_the_loop_with_real_data(ray_cluster, loop_inputs, anchored_policy, tmp_path, capsys):
    """mbpo mode, objective bc with the buffer and the anchor: the demonstrations train every iteration,
    the real episodes' successes are offered to the buffer, and each rank's buffer is checkpointed."""
    from tests.rl.test_loop import SMALL, train_logs

    _, _, _, wm = loop_inputs
    store, policy = anchored_policy
    out = tmp_path / "run"
    logs = train_logs(["--policy", policy, "--world-model", wm, "--store", store, "--out", str(out),
                       "--mbpo.objective=bc", "--mbpo.bc_buffer=1000", "--mbpo.bc_demo_coef=1.0", "--mbpo.tasks=0",
                       "--mbpo.branches=4", "--mbpo.learners=2", "--mbpo.iterations=2", "--mbpo.real_every=1",
                       "--mbpo.real_episodes=1", "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=4",
                       "--mbpo.updates_per_batch=2", "--env.max_steps=6", "--world_model.engine=vllm", *SMALL],
                      out, capsys)
    assert [x["iteration"] for x in logs] == [1, 2]
    assert all(x["bc/demo_loss"] > 0 and x["bc/real_rows_kept"] == 0 for x in logs)  # 6 steps: no real success
    assert sorted(p.name for p in (out / "checkpoint" / "policy").glob("bc_buffer*")) == [
        "bc_buffer_rank0.pt", "bc_buffer_rank1.pt"]
