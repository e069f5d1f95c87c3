"""Sibling branches (`mbpo-ray branches`): several sampled continuations of one stored state, run in
real LIBERO and stored as episodes of their own."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.config import build_config
from mbpo_ray.replay import ReplayStore
from mbpo_ray.replay.samplers import draw_groups
from mbpo_ray.replay.store import EpisodeMeta
from mbpo_ray.rl.siblings import sibling_group


def _meta(eid: str, source: str, chunks: int = 4) -> EpisodeMeta:
    return EpisodeMeta(eid, 0, 0, chunks + 1, chunks, "libero_spatial", 0, False, 10 * chunks, source)


def test_branch_episodes_are_grouped_by_id_and_never_start_a_branch():
    assert sibling_group("e1:3~s0g2b7") == "e1:3~s0g2" == sibling_group("e1:3~s0g2b0")
    episodes = [_meta("a", "branch"), _meta("b", "real"), _meta("c", "branch", 9)]
    for sampler in ("uniform", "reverse", "initial"):  # grasp draws from the same eligible episodes
        mc = build_config(overrides={"mbpo": {"start_sampler": sampler, "branches": 16, "group_size": 2}}).mbpo
        ep, _, _ = draw_groups(episodes, 16, [], np.random.default_rng(0), 0, mc)
        assert set(ep.tolist()) == {1}, sampler
    with pytest.raises(Exception, match="no start states"):
        draw_groups(episodes[:1], 2, [], np.random.default_rng(0), 0, mc)


@pytest.mark.libero
def test_branches_run_in_libero_and_are_stored_once_as_siblings(ray_cluster, loop_inputs, tmp_path, capsys):
    from mbpo_ray.cli import main
    from mbpo_ray.config import EnvConfig
    from mbpo_ray.envs.libero_env import LiberoEnv
    from mbpo_ray.policy import load_policy
    from mbpo_ray.policy.evaluate import run_policy_episode
    from mbpo_ray.rl.siblings import summarize

    _, _, policy_dir, _ = loop_inputs
    uri = str(tmp_path / "store")
    store = ReplayStore.create(uri, ReplayStore.open(loop_inputs[1]).spec)
    with LiberoEnv(EnvConfig(suite="libero_spatial", task_id=0, image_size=32, chunk_size=2, max_steps=6)) as env:
        run_policy_episode(env, load_policy(policy_dir), 0, greedy=False, seed=1, store=store)  # states to branch from
    args = ["branches", uri, "--policy", policy_dir, "--workers", "1", "--mbpo.branches=4", "--mbpo.group_size=2",
            "--mbpo.n_chunks=2", "--mbpo.tasks=0", "--mbpo.start_sampler=uniform", "--env.max_steps=6",
            "--mbpo.runner_cpus=0.5"]
    assert main(args) == 0, capsys.readouterr().err
    store = ReplayStore.open(uri)
    branches = [e for e in store.episodes if e.source == "branch"]
    assert len(store.episodes) == 5 and len(branches) == 4
    assert all(e.chunks == 2 and e.env_steps == 4 and e.task_id == 0 for e in branches)  # 2 chunks of 2 actions
    groups = {}
    for e in branches:
        groups.setdefault(sibling_group(e.episode_id), []).append(e.episode_id)
    assert sorted(len(v) for v in groups.values()) == [2, 2]
    source = store.episodes[0]
    for ids in groups.values():
        a, b = (store.read_episode(i) for i in ids)
        start_chunk = int(ids[0].split("~")[0].rsplit(":", 1)[1])
        start = store.read_start_states(np.array([0]), np.array([start_chunk]), ["sim_state", "proprio"])
        for ep in (a, b):  # each branch begins at its start state and keeps a state and proprio per row
            np.testing.assert_allclose(ep.column("sim_state")[0].as_py(), start.column("sim_state")[0].as_py(),
                                       atol=1e-6)
            assert all(len(s) > 0 for s in ep.column("sim_state").to_pylist())
            np.testing.assert_allclose(ep.column("proprio")[0].as_py(), start.column("proprio")[0].as_py(), atol=1e-4)
        assert a.column("actions")[0].as_py() != b.column("actions")[0].as_py()  # siblings differ in their actions
        assert ids[0].split("~")[0].startswith(source.episode_id)
    s = summarize(store)
    assert (s.branches, s.groups, s.env_steps, s.success_per_branch) == (4, 2, 16, 0.0)  # a random policy
    out = capsys.readouterr().out
    assert "4 to run" in out and "4 branches from 2 start states" in out
    assert main(args) == 0  # run again: everything is stored already, nothing runs twice
    assert "0 to run" in capsys.readouterr().out and len(ReplayStore.open(uri).episodes) == 5
