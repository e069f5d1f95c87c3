"""Branched imagination with a real (tiny, random) world model on the transformers engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpo_ray.policy.base import Observations
from mbpo_ray.rl.imagine import Branches, imagine
from mbpo_ray.world_model.evaluate import WorldModel
from mbpo_ray.world_model.tokenizer import resize_frames
from tests.rl.conftest import INSTRUCTIONS, tiny_policy


def test_branches_record_what_the_policy_saw_and_did(tiny_world_model):
    wm = WorldModel(tiny_world_model, engine="hf")
    policy = tiny_policy()
    rng = np.random.default_rng(0)
    b, n = 12, 3
    head, wrist = (rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    instr = [INSTRUCTIONS[i % 2] for i in range(b)]
    br = imagine(wm, policy, head, wrist, instr, n_chunks=n, seed=3)
    assert br.head.shape == (b, n, 16, 16, 3) and br.actions.shape == (b, n, 2, 7) and len(br) == b
    # steps are taken until the first predicted success, never after it
    assert br.valid[:, 0].all()
    for i in range(b):
        ends = np.flatnonzero(br.terminal[i])
        last = ends[0] if len(ends) else n - 1
        assert br.valid[i, : last + 1].all() and not br.valid[i, last + 1 :].any()
        assert len(ends) <= 1
    assert ((br.reward == 1.0) == br.terminal).all() and ((br.p_yes > 0.5) == br.terminal).all()
    assert br.steps == br.valid.sum() and 0 < br.steps <= b * n
    # the recorded log-probs are the behaviour policy's for the recorded observations and actions
    v = br.valid
    obs = Observations(br.head[v], br.wrist[v], np.zeros((int(v.sum()), 8), np.float32),
                       [instr[i] for i in np.nonzero(v)[0]])
    with torch.no_grad():
        logp, _, value = policy.evaluate(obs, torch.from_numpy(br.actions[v]), per_token=True)
    np.testing.assert_allclose(logp.numpy(), br.token_log_prob[v], atol=1e-4)
    np.testing.assert_allclose(value.numpy(), br.value[v], atol=1e-5)
    # the start observation is the real frame at the tokenizer's size; a patch whose code the model
    # kept shows the pixels it showed before, a changed one the decoded code
    np.testing.assert_array_equal(br.head[:, 0], resize_frames(head, 16))
    tok = wm.tokenizer
    hc, wc, hf, wf = wm.start(head, wrist)
    r = wm.imagine_step(instr, hc, wc, list(br.actions[:, 0]), head_frames=hf, wrist_frames=wf)
    kept = np.repeat(np.repeat((r.head == hc).reshape(-1, 4, 4), 4, 1), 4, 2)
    assert 0 < kept.mean() < 1
    np.testing.assert_array_equal(r.head_frames[kept], hf[kept])
    np.testing.assert_array_equal(r.head_frames[~kept], tok.decode(r.head)[~kept])
    off = imagine(WorldModel(tiny_world_model, engine="hf", keep_pixels=False), policy, head, wrist, instr, n, seed=3)
    np.testing.assert_array_equal(off.head[:, 0], tok.decode(tok.encode(head)))  # off: the tokenizer's rendering


def test_same_seed_same_branches_and_concat(tiny_world_model):
    wm = WorldModel(tiny_world_model, engine="hf")
    policy = tiny_policy()
    rng = np.random.default_rng(1)
    head, wrist = (rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    a = imagine(wm, policy, head, wrist, INSTRUCTIONS * 2, n_chunks=2, seed=5)
    b = imagine(wm, policy, head, wrist, INSTRUCTIONS * 2, n_chunks=2, seed=5)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.final_head, b.final_head)
    a.policy_version, b.policy_version = 3, 2
    both = Branches.concat([a, b])
    assert len(both) == 8 and both.policy_version == 2 and both.actions.shape[0] == 8


def test_uncertain_transitions_are_not_taken(tiny_world_model):
    wm = WorldModel(tiny_world_model, engine="hf")
    policy = tiny_policy()
    rng = np.random.default_rng(1)
    head, wrist = (rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    instr = [INSTRUCTIONS[0]] * 16
    free = imagine(wm, policy, head, wrist, instr, n_chunks=2, seed=4, greedy=True)
    assert np.isfinite(free.uncertainty[free.valid]).all() and (free.uncertainty[free.valid] > 0).all()
    cut = float(np.median(free.uncertainty[:, 0]))
    gated = imagine(wm, policy, head, wrist, instr, n_chunks=2, seed=4, greedy=True, max_uncertainty=cut)
    unsure = free.uncertainty[:, 0] > cut
    assert unsure.any() and not gated.valid[unsure].any()  # those branches end before their first step
    np.testing.assert_array_equal(gated.valid[~unsure, 0], True)
    assert not gated.reward[unsure].any()


def test_a_worker_branches_groups_and_sees_episodes_appended_after_it_started(tiny_world_model, tmp_path):
    from actors.world_model_worker import WorldModelWorker
    from mbpo_ray.config import build_config
    from mbpo_ray.policy import save_policy
    from mbpo_ray.protocol import ImagineRequest, Versions
    from mbpo_ray.replay import EpisodeBuilder, ReplayError, ReplayStore, StoreSpec
    from mbpo_ray.weights import WeightStore
    from tests.conftest import random_obs
    from tests.rl.conftest import H

    spec = StoreSpec(image_size=32, chunk_size=H)
    store = ReplayStore.create(str(tmp_path / "store"), spec)
    rng = np.random.default_rng(0)

    def episode(task: int):
        b = EpisodeBuilder(spec, suite="libero_spatial", task_id=task, instruction=INSTRUCTIONS[task % 2], source="demo")
        for c in range(3):
            b.add_chunk(random_obs(rng, spec), rng.uniform(-0.3, 0.3, (H, 7)).astype(np.float32), float(c == 2), c == 2,
                        c == 2, rng.standard_normal(5))  # a success at the end
        return b.finish(random_obs(rng, spec))

    store.append(episode(0))
    save_policy(tiny_policy(), tmp_path / "policy", {"store_image_size": 32})
    cfg = build_config(overrides=["--world_model.engine=hf", "--mbpo.n_chunks=1", "--mbpo.group_size=4",
                                  "--mbpo.branches=8", "--mbpo.start_sampler=reverse", "--mbpo.start_window=1",
                                  "--mbpo.policy_temperature=1.3"])
    worker = WorldModelWorker(cfg.to_dict(), tiny_world_model, str(tmp_path / "policy"), str(tmp_path / "store"),
                              str(tmp_path / "w"))
    assert worker.policy.temperature == 1.3  # branches sampled at mbpo.policy_temperature
    store.append(episode(1))  # a real rollout arriving while the worker runs
    br = worker.imagine(ImagineRequest(8, seed=0, tasks=(1,))).branches
    new = store.episodes[1].episode_id
    assert all(s == f"{new}:2" for s in br.start_ids)  # reverse, window 1: the last chunk of the new episode
    assert list(br.group) == [0] * 4 + [1] * 4 and (br.to_go == 1).all()

    # a request that names its store parts and weight versions gets exactly those, whatever is newer
    store.append(episode(0))
    weights = WeightStore(str(tmp_path / "w"))
    for v in (1, 2):
        weights.publish("policy", tiny_policy(seed=v).state_dict(), v)
    first = store.part_names[:1]
    res = worker.imagine(ImagineRequest(8, seed=0, parts=first, versions=Versions(policy=1)))
    old = store.episodes[0].episode_id
    assert all(s == f"{old}:2" for s in res.branches.start_ids) and res.versions == Versions(1, 0)
    held = worker.policy.state_dict()
    assert all(torch.equal(held[k], v) for k, v in tiny_policy(seed=1).state_dict().items())
    assert worker.imagine(ImagineRequest(8, seed=0)).branches.policy_version == 2  # unnamed: the newest
    with pytest.raises(ReplayError, match="not visible to this reader"):
        worker.imagine(ImagineRequest(8, seed=0, parts=("part-0-missing",)))
