"""Branches from real LIBERO instead of the world model: the baselines VLA-MBPO is judged against.

``mbpo.mode=online`` (online RL at the same real-data budget): env runners roll the current policy
out (sampled actions) from LIBERO init states; every episode becomes one "branch" of chunk steps, so
the same learner group and the same objectives (``ppo``, ``grpo``) train on it: ``group_size``
episodes start from one init state (a group), the reward is 1 at the chunk that ends in success, an
episode that runs out of time ends with nothing to bootstrap (value 0). Every episode is also
appended to the replay store (``source=real``), and its env steps count against the real-data budget.

``mbpo.mode=simulator`` (VLA-MBPO with a perfect world model): the branches VLA-MBPO would imagine,
from the same start states (drawn from the store by ``mbpo.start_sampler``, ``group_size`` branches
each), ``mbpo.n_chunks`` chunks long, are run in LIBERO itself from the start's recorded simulator
state, the policy acting on the real frames after each chunk (:func:`run_policy_branch`); a branch
that has not succeeded by then bootstraps from the critic at its last real observation. What the
learner gains here is the most any world model could give it with these branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbpo_ray.rl.imagine import Branches


@dataclass
class Trajectory:
    """One real episode as on-policy RL needs it (per chunk step, T steps)."""

    head: np.ndarray  # (T, S, S, 3) the observation each chunk was chosen on
    wrist: np.ndarray
    actions: np.ndarray  # (T, H, 7) the sampled chunks
    token_log_prob: np.ndarray  # (T, H, 7)
    value: np.ndarray  # (T,)
    final_head: np.ndarray  # (S, S, 3)
    final_wrist: np.ndarray
    success: bool


def trajectories_to_branches(trajs: list[Trajectory], instructions: list[str], group: np.ndarray,
                             last_value: np.ndarray | None = None) -> Branches:
    """(B, T_max) branches, steps past an episode's end invalid; reward 1 and terminal at the success
    chunk; a branch that did not succeed bootstraps from ``last_value`` (default 0: a timed-out episode)."""
    b, n = len(trajs), max(len(t.actions) for t in trajs)
    s, hz = trajs[0].head.shape[1], trajs[0].actions.shape[1]
    z = lambda *shape, dt=np.float32: np.zeros((b, *shape), dt)  # noqa: E731
    head, wrist = z(n, s, s, 3, dt=np.uint8), z(n, s, s, 3, dt=np.uint8)
    actions, logp, value = z(n, hz, 7), z(n, hz, 7), z(n)
    reward, terminal, valid = z(n), z(n, dt=bool), z(n, dt=bool)
    for i, t in enumerate(trajs):
        k = len(t.actions)
        head[i, :k], wrist[i, :k], actions[i, :k], logp[i, :k], value[i, :k] = (
            t.head, t.wrist, t.actions, t.token_log_prob, t.value)
        valid[i, :k] = True
        if t.success:
            reward[i, k - 1], terminal[i, k - 1] = 1.0, True
    return Branches(head=head, wrist=wrist, instruction=list(instructions), actions=actions, token_log_prob=logp,
                    value=value, reward=reward, p_yes=reward.copy(), terminal=terminal, valid=valid,
                    last_value=np.zeros(b, np.float32) if last_value is None else np.asarray(last_value, np.float32),
                    final_head=np.stack([t.final_head for t in trajs]),
                    final_wrist=np.stack([t.final_wrist for t in trajs]), group=np.asarray(group, np.int64))


def rollout_jobs(checkpoint: str, suite: str, task_ids: list[int], branches: int, group_size: int,
                 rng: np.random.Generator, version: int, id_prefix: str | None = None) -> tuple[list[dict], np.ndarray]:
    """``branches / group_size`` (task, init state) starts, each rolled out ``group_size`` times with
    its own seed; the jobs and each job's group. ``id_prefix``: job k stores its episode as
    ``{id_prefix}-j{k}``, once."""
    starts = branches // group_size
    tasks, inits = rng.choice(task_ids, starts), rng.integers(0, 50, starts)
    jobs, group = [], []
    for g, (t, i) in enumerate(zip(tasks, inits, strict=True)):
        for _ in range(group_size):
            jobs.append({"checkpoint": checkpoint, "suite": suite, "task_id": int(t), "init_state": int(i),
                         "greedy": False, "seed": int(rng.integers(2**31)), "to_store": True,
                         "policy_version": version, "trajectory": True,
                         "episode_id": f"{id_prefix}-j{len(jobs)}" if id_prefix else None})
            group.append(g)
    return jobs, np.array(group)


def run_policy_branch(env, policy, sim_state: np.ndarray, n_chunks: int, seed: int, store=None,
                      episode_id: str | None = None, policy_version: int = -1) -> dict:
    """``n_chunks`` sampled chunks of ``policy`` from a recorded simulator state, acting on the real
    frames after each chunk; stops early at success (or if the env's time runs out). The result holds
    the :class:`Trajectory`, the env steps, and the critic's value at the last observation (0 when the
    branch succeeded or its episode is over: nothing left to bootstrap). With ``store`` the branch is
    also appended to it as an episode of its own (``source="branch"``, ``episode_id``), with every
    chunk's proprio and simulator state: data in which one state's siblings differ only in their actions."""
    import torch

    from mbpo_ray.policy.base import Observations
    from mbpo_ray.replay.episode import EpisodeBuilder

    gen = torch.Generator().manual_seed(seed)
    obs, steps, done = env.restore(sim_state), [], False
    builder = None if store is None else EpisodeBuilder(
        store.spec, suite=env.cfg.suite, task_id=env.cfg.task_id, instruction=env.instruction, source="branch",
        policy_version=policy_version, episode_id=episode_id)
    while len(steps) < n_chunks and not done:
        out = policy.act(Observations.single(obs, env.instruction), greedy=False, generator=gen)
        steps.append((obs.head, obs.wrist, out.actions[0].numpy(), out.token_log_prob[0].numpy(), float(out.value[0])))
        state = None if builder is None else env.sim_state()
        result = env.step_chunk(out.actions[0].numpy())
        if builder is not None:
            builder.add_chunk(obs, result.actions, result.reward, result.success, result.done, state)
        obs, done = result.obs, result.done
    if builder is not None:
        store.append(builder.finish(obs, env.sim_state()))
    last_value = 0.0
    if not done:
        last_value = float(policy.act(Observations.single(obs, env.instruction), greedy=True).value[0])
    traj = Trajectory(*(np.stack(x) for x in zip(*steps, strict=True)), final_head=obs.head, final_wrist=obs.wrist,
                      success=bool(env.success))
    return {"trajectory": traj, "last_value": last_value, "steps": int(env.t), "success": bool(env.success),
            "instruction": env.instruction, "task_id": env.cfg.task_id}


def simulator_jobs(checkpoint: str, suite: str, table, seed: int, n_chunks: int) -> list[dict]:
    """One :meth:`EnvRunner.policy_branch` job per row of ``table`` (start states with their
    ``task_id`` and ``sim_state``), each with its own sampling seed."""
    from mbpo_ray.seeds import derive_seed

    tasks, states = table.column("task_id").to_pylist(), table.column("sim_state").to_pylist()
    return [{"checkpoint": checkpoint, "suite": suite, "task_id": int(t), "sim_state": np.asarray(s, np.float64),
             "n_chunks": n_chunks, "seed": derive_seed(seed, k) % 2**31}
            for k, (t, s) in enumerate(zip(tasks, states, strict=True))]


def run_prefix_continuations(env, policy, sim_state: np.ndarray, n_prefix: int, continuations: int,
                             budget_chunks: int, seed: int) -> dict:
    """How much does a branch's prefix decide? One sampled prefix of ``n_prefix`` chunks from a
    recorded simulator state, then ``continuations`` independent sampled runs of the same policy from
    where the prefix ended, each until success or ``budget_chunks`` chunks in all (prefix included).
    Returns the prefix's success, its last observation's views (``final_head``, ``final_wrist``) and
    the critic's value there (0 after success), the goal state there
    (:func:`~mbpo_ray.envs.goal_state.measure`), each continuation's eventual success (the prefix's own
    when it succeeded or used the budget) and the env steps of it all."""
    from mbpo_ray.envs.goal_state import measure
    from mbpo_ray.seeds import derive_seed

    prefix = run_policy_branch(env, policy, sim_state, n_prefix, seed)
    end = env.raw.sim.get_state().flatten().copy()
    goal = measure(env, end)
    steps, outcomes, left = prefix["steps"], [], budget_chunks - n_prefix
    for k in range(continuations):
        if prefix["success"] or left <= 0:
            outcomes.append(prefix["success"])
            continue
        run = run_policy_branch(env, policy, end, left, derive_seed(seed, k + 1) % 2**31)
        outcomes.append(run["success"])
        steps += run["steps"]
    traj = prefix["trajectory"]
    return {"prefix_success": prefix["success"], "value": prefix["last_value"], "goal": goal,
            "final_head": traj.final_head, "final_wrist": traj.final_wrist, "instruction": env.instruction,
            "eventual": outcomes, "steps": steps, "task_id": env.cfg.task_id}
