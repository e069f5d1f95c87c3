"""Policy evaluation on real LIBERO (plain Python; ``actors/env_runner.py`` runs it in Ray actors).

LIBERO's protocol: per task, the suite's fixed init states 0..n-1 in order, the suite's max steps,
the settle steps :class:`~mbpo_ray.envs.libero_env.LiberoEnv` does after reset; success if the
env's own predicate holds before time runs out. The policy is called once per chunk, on the
observation rendered at the chunk's end, and the whole chunk runs open loop (``step_chunk``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mbpo_ray.config import EvalConfig
from mbpo_ray.envs.libero_env import LiberoEnv
from mbpo_ray.policy.base import Observations, Policy
from mbpo_ray.replay import ReplayStore
from mbpo_ray.replay.episode import EpisodeBuilder


def episode_seed(seed: int, task_id: int, init_state: int) -> int:
    """Per-episode sampling seed: the same episodes come out whatever the number of workers."""
    return seed * 1_000_003 + task_id * 100 + init_state


def eval_plan(ec: EvalConfig) -> list[dict]:
    """One job per episode, task by task, init states in order; the first ``videos`` by (init, task) record."""
    jobs = [{"suite": ec.suite, "task_id": t, "init_state": i, "greedy": not ec.sample,
             "seed": episode_seed(ec.seed, t, i), "record": False}
            for t in ec.task_ids for i in range(ec.episodes_per_task)]
    for job in sorted(jobs, key=lambda j: (j["init_state"], j["task_id"]))[: ec.videos]:
        job["record"] = True
    return jobs


def _stored_summary(env: LiberoEnv, store: ReplayStore, episode_id: str, init_state: int) -> dict | None:
    """The summary of episode ``episode_id`` if the store already holds it (a job run again)."""
    store.refresh()
    meta = next((e for e in store.episodes if e.episode_id == episode_id), None)
    if meta is None:
        return None
    return {"task_id": meta.task_id, "init_state": init_state, "success": bool(meta.success), "steps": meta.env_steps,
            "chunks": meta.chunks, "seconds": 0.0, "policy_seconds": 0.0, "instruction": env.instruction,
            "frames": None, "episode_id": episode_id, "stored_before": True}


def run_policy_episode(env: LiberoEnv, policy: Policy, init_state: int, greedy: bool = True, seed: int = 0,
                       record: bool = False, store: ReplayStore | None = None, policy_version: int = -1,
                       trajectory: bool = False, episode_id: str | None = None) -> dict:
    """One episode from a fixed init state; frames (head, wrist per chunk end) only if ``record``.

    With ``store`` the episode is also appended to it as real data (``source="real"``), success or not.
    ``episode_id`` (the job's id) makes that exactly once: a job whose episode the store already holds
    (its runner died after the append, or a resumed run repeats it) is not appended again; without
    ``trajectory`` it is not even run again, its stored summary is returned.
    With ``trajectory`` the result carries what on-policy RL needs (:class:`mbpo_ray.rl.online.Trajectory`):
    each chunk step's observation, the sampled chunk, its per-token log-probs and the value.
    """
    if store is not None and episode_id is not None:
        stored = _stored_summary(env, store, episode_id, init_state)
        if stored is not None and not trajectory:
            return stored
        if stored is not None:  # the same seeded episode again, for its trajectory; the store keeps one copy
            return {**run_policy_episode(env, policy, init_state, greedy, seed, record, None, policy_version, True),
                    "episode_id": episode_id, "stored_before": True}
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    obs = env.reset(init_state)
    frames = [(obs.head, obs.wrist)] if record else None
    builder = None
    if store is not None:
        builder = EpisodeBuilder(store.spec, suite=env.cfg.suite, task_id=env.cfg.task_id,
                                 instruction=env.instruction, source="real", policy_version=policy_version,
                                 episode_id=episode_id)
    done, chunks, policy_s = False, 0, 0.0
    steps = []
    while not done:
        t1 = time.perf_counter()
        out = policy.act(Observations.single(obs, env.instruction), greedy=greedy, generator=gen)
        policy_s += time.perf_counter() - t1
        if trajectory:
            steps.append((obs.head, obs.wrist, out.actions[0].numpy(), out.token_log_prob[0].numpy(), float(out.value[0])))
        state = env.sim_state() if builder is not None else None
        result = env.step_chunk(out.actions[0].numpy())
        if builder is not None:
            builder.add_chunk(obs, result.actions, result.reward, result.success, result.done, state)
        obs, done, chunks = result.obs, result.done, chunks + 1
        if record:
            frames.append((obs.head, obs.wrist))
    if builder is not None:
        store.append(builder.finish(obs, env.sim_state()))
    result = {"task_id": env.cfg.task_id, "init_state": init_state, "success": bool(env.success), "steps": env.t,
              "chunks": chunks, "seconds": round(time.perf_counter() - t0, 3), "policy_seconds": round(policy_s, 3),
              "instruction": env.instruction, "frames": frames,
              "episode_id": builder.episode_id if builder is not None else None}
    if trajectory:
        from mbpo_ray.rl.online import Trajectory

        result["trajectory"] = Trajectory(*(np.stack(x) for x in zip(*steps, strict=True)), final_head=obs.head,
                                          final_wrist=obs.wrist, success=bool(env.success))
    return result


def write_video(frames: list[tuple[np.ndarray, np.ndarray]], out: Path, r: dict, ms_per_chunk: int = 400) -> str:
    """GIF (and an MP4 of the same name) of one episode: head and wrist views side by side, upright,
    one frame per chunk end."""
    from mbpo_ray.replay.video import encode_mp4
    from mbpo_ray.video_log import gif_bytes, side_by_side

    video = side_by_side(*(np.stack(v) for v in zip(*frames, strict=True)))
    name = f"task{r['task_id']}_init{r['init_state']}_{'success' if r['success'] else 'failure'}.gif"
    (out / name).write_bytes(gif_bytes(video, ms_per_chunk))
    encode_mp4((out / name).with_suffix(".mp4"), video, max(1, round(1000 / ms_per_chunk)))
    return name


def summarize(results: list[dict], ec: EvalConfig, checkpoint: str, seconds: float, workers: int) -> dict:
    """Success per task and overall, in the plan's order."""
    results = sorted(results, key=lambda r: (r["task_id"], r["init_state"]))
    tasks: dict[str, dict] = {}
    for t in ec.task_ids:
        rs = [r for r in results if r["task_id"] == t]
        tasks[str(t)] = {"success_rate": sum(r["success"] for r in rs) / len(rs), "episodes": len(rs),
                         "instruction": rs[0]["instruction"],
                         "successes": [r["init_state"] for r in rs if r["success"]]}
    return {
        "suite": ec.suite,
        "checkpoint": Path(checkpoint).name,
        "success_rate": sum(r["success"] for r in results) / len(results),
        "episodes": len(results),
        "tasks": tasks,
        "greedy": not ec.sample,
        "seed": ec.seed,
        "max_steps": ec.max_steps or None,
        "workers": workers,
        "seconds": round(seconds, 1),
        "seconds_per_episode": seconds / len(results),
        "mean_episode_seconds": float(np.mean([r["seconds"] for r in results])),
        "mean_policy_seconds_per_chunk": float(sum(r["policy_seconds"] for r in results)
                                               / max(1, sum(r["chunks"] for r in results))),
        "videos": sorted(r["video"] for r in results if r.get("video")),
        "episodes_detail": [{k: r[k] for k in ("task_id", "init_state", "success", "steps", "seconds")}
                            for r in results],
    }
