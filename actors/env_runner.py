"""Env-runner actor: real LIBERO environments in one process, for collection and policy evaluation.

Collection: episodes are appended to the store by the actor itself (the store is append-safe for
many writers), so frames never travel through the driver; each call returns a small summary.
Evaluation: the actor loads a policy checkpoint once and keeps one LiberoEnv per task it meets
(the two most recent), so consecutive episodes of a task reuse the environment.

Driver side: :func:`run_episodes` spreads policy episodes over runners (a dead runner is replaced and
its episode run again), :func:`collect_parallel` scripted demonstrations, :func:`evaluate_checkpoint`
LIBERO's evaluation protocol (``eval.json`` + GIFs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import ray

from mbpo_ray.collect import run_expert_episode
from mbpo_ray.config import Config, build_config
from mbpo_ray.connect import connect_ray
from mbpo_ray.envs.libero_env import LiberoEnv
from mbpo_ray.replay import ReplayStore

MAX_ENVS = 2


class EnvRunner:
    """LiberoEnvs made on first use; build with :func:`make_env_runners`."""

    def __init__(self, cfg_dict: dict, store_uri: str | None):
        self.cfg = build_config(overrides=cfg_dict)
        self.store = ReplayStore.open(store_uri) if store_uri else None
        self._envs: OrderedDict[tuple[str, int], LiberoEnv] = OrderedDict()
        self._policies: dict[str, object] = {}

    def _env(self, suite: str, task_id: int) -> LiberoEnv:
        key = (suite, task_id)
        if key not in self._envs:
            env_cfg = dataclasses.replace(self.cfg.env, suite=suite, task_id=task_id)
            self._envs[key] = LiberoEnv(env_cfg, seed=self.cfg.collect.seed)
            while len(self._envs) > MAX_ENVS:
                self._envs.popitem(last=False)[1].close()
        self._envs.move_to_end(key)
        return self._envs[key]

    @property
    def env(self) -> LiberoEnv:
        return self._env(self.cfg.env.suite, self.cfg.env.task_id)

    def expert_episode(self, index: int, init_state: int) -> dict:
        return dataclasses.asdict(run_expert_episode(self.env, self.cfg, self.store, index, init_state))

    def policy_episode(self, checkpoint: str, suite: str, task_id: int, init_state: int, greedy: bool = True,
                       seed: int = 0, record: bool = False, to_store: bool = False, policy_version: int = -1,
                       trajectory: bool = False, episode_id: str | None = None) -> dict:
        """One episode of the policy saved in ``checkpoint`` (loaded once per actor); ``to_store``:
        append it to the actor's store as real data, once per ``episode_id``."""
        from mbpo_ray.policy.evaluate import run_policy_episode

        return run_policy_episode(self._env(suite, task_id), self._policy(checkpoint), init_state, greedy,
                                  seed, record, self.store if to_store else None, policy_version, trajectory,
                                  episode_id)

    def policy_branch(self, checkpoint: str, suite: str, task_id: int, sim_state: np.ndarray, n_chunks: int,
                      seed: int, temperature: float | None = None, to_store: bool = False,
                      episode_id: str | None = None, policy_version: int = -1) -> dict:
        """``n_chunks`` sampled chunks from a recorded simulator state (``mbpo.mode=simulator``), at
        ``temperature`` when given (else ``mbpo.policy_temperature``); ``to_store``: appended to the
        actor's store as a ``branch`` episode named ``episode_id``."""
        from mbpo_ray.rl.online import run_policy_branch

        return run_policy_branch(self._env(suite, task_id), self._policy(checkpoint, temperature), sim_state,
                                 n_chunks, seed, self.store if to_store else None, episode_id, policy_version)

    def prefix_continuations(self, checkpoint: str, suite: str, task_id: int, sim_state: np.ndarray, n_prefix: int,
                             continuations: int, budget_chunks: int, seed: int, temperature: float | None = None) -> dict:
        """A sampled prefix and its continuations from a recorded simulator state
        (:func:`mbpo_ray.rl.online.run_prefix_continuations`)."""
        from mbpo_ray.rl.online import run_prefix_continuations

        return run_prefix_continuations(self._env(suite, task_id), self._policy(checkpoint, temperature), sim_state,
                                        n_prefix, continuations, budget_chunks, seed)

    def _policy(self, checkpoint: str, temperature: float | None = None):
        """The policy saved in ``checkpoint``, loaded once (only the newest is kept), sampling at
        ``temperature``, by default ``mbpo.policy_temperature`` (as the learner scores it)."""
        from mbpo_ray.policy import load_policy

        if checkpoint not in self._policies:
            self._policies = {checkpoint: load_policy(checkpoint)}
        policy = self._policies[checkpoint]
        policy.temperature = self.cfg.mbpo.policy_temperature if temperature is None else temperature
        return policy

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        while self._envs:
            self._envs.popitem()[1].close()


def make_env_runners(cfg_dict: dict, store_uri: str | None, n: int, num_cpus: float = 1.0,
                     resources: dict[str, float] | None = None) -> list:
    """``n`` env-runner actors; rendering backend and thread counts pinned per process."""
    env_vars = {
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", cfg_dict["env"]["renderer"]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    remote = ray.remote(EnvRunner).options(num_cpus=num_cpus, resources=dict(resources or {}),
                                           runtime_env={"env_vars": env_vars})
    return [remote.remote(cfg_dict, store_uri) for _ in range(n)]


def run_episodes(runners: list, jobs: list[dict], on_result=lambda r: None, make_runner=None,
                 method: str = "policy_episode") -> list[dict]:
    """Run ``policy_episode(**job)`` (or another runner ``method``) for every job over the runners,
    each runner one episode at a time.

    With ``make_runner``, a runner that dies is replaced and its episode run again (no episode is
    lost or counted twice); without it the error propagates. ``runners`` is updated in place.
    Results come in completion order; each carries ``job_index``, its job's position in ``jobs``.
    """
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    todo, pending, results = list(enumerate(jobs)), {}, []

    def submit(slot: int, job: tuple[int, dict]) -> None:
        pending[getattr(runners[slot], method).remote(**job[1])] = (slot, job)

    for slot in range(min(len(runners), len(todo))):
        submit(slot, todo.pop(0))
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        slot, job = pending.pop(ready)
        try:
            r = ray.get(ready)
        except (RayActorError, ActorDiedError, ActorUnavailableError):
            if make_runner is None:
                raise
            runners[slot] = make_runner()
            submit(slot, job)
            continue
        r["job_index"] = job[0]
        results.append(r)
        on_result(r)
        if todo:
            submit(slot, todo.pop(0))
    return results


def run_by_task(runners: list, jobs: list[dict], make_runner=None, method: str = "policy_episode",
                on_result=lambda r: None) -> list[dict]:
    """:func:`run_episodes` with the jobs handed out task by task (a runner keeps only ``MAX_ENVS``
    environments, and making one costs seconds), the results returned in the order of ``jobs``."""
    order = sorted(range(len(jobs)), key=lambda i: jobs[i]["task_id"])
    res = run_episodes(runners, [jobs[i] for i in order], on_result, make_runner=make_runner, method=method)
    out = [None] * len(jobs)
    for r in res:
        r["job_index"] = order[r["job_index"]]
        out[r["job_index"]] = r
    return out


def collect_parallel(cfg: Config, uri: str, on_episode) -> list[dict]:
    """Episodes spread over env-runner actors; each actor takes the next episode when free."""
    from mbpo_ray.collect import episode_plan

    plan = episode_plan(cfg)
    workers = min(cfg.collect.workers, len(plan))
    connect_ray(max(workers, os.cpu_count() or 1))
    runners = make_env_runners(cfg.to_dict(), uri, workers)
    pending: dict[Any, Any] = {}
    results = []
    try:
        for runner in runners:
            if plan:
                pending[runner.expert_episode.remote(*plan.pop(0))] = runner
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            runner = pending.pop(ready)
            results.append(ray.get(ready))
            on_episode(results[-1])
            if plan:
                pending[runner.expert_episode.remote(*plan.pop(0))] = runner
    finally:
        ray.get([r.close.remote() for r in runners])
        for r in runners:
            ray.kill(r)
    return sorted(results, key=lambda r: r["index"])


def evaluate_checkpoint(checkpoint: str, cfg: Config, out: str, on_episode=lambda r: None,
                        to_store: str | None = None) -> dict:
    """LIBERO's protocol over env-runner actors; writes ``eval.json`` and GIFs into ``out``. With
    ``to_store`` every episode, success or not, is also appended to that replay store as a policy
    rollout (``source="real"``): on-policy data for the world model."""
    from mbpo_ray.policy import read_policy_meta
    from mbpo_ray.policy.evaluate import eval_plan, summarize, write_video

    ec = cfg.eval
    meta = read_policy_meta(checkpoint)
    Path(out).mkdir(parents=True, exist_ok=True)
    plan = eval_plan(ec)
    workers = min(ec.workers, len(plan))
    connect_ray(max(workers, os.cpu_count() or 1))
    env_cfg = {"suite": ec.suite, "image_size": meta["store_image_size"], "chunk_size": meta["bins"]["chunk_size"],
               "max_steps": ec.max_steps, "renderer": cfg.env.renderer, "settle_steps": cfg.env.settle_steps}
    runners = make_env_runners({**cfg.to_dict(), "env": {**cfg.to_dict()["env"], **env_cfg}}, to_store, workers)
    ckpt = str(Path(checkpoint).resolve())
    t0 = time.time()

    def on_result(r: dict) -> None:
        if r.get("frames") is not None:
            r["video"] = write_video(r.pop("frames"), Path(out), r)
        on_episode(r)

    try:
        results = run_episodes(runners, [{"checkpoint": ckpt, **job, "to_store": bool(to_store)} for job in plan],
                               on_result)
    finally:
        ray.get([r.close.remote() for r in runners])
        for r in runners:
            ray.kill(r)
    report = summarize(results, ec, checkpoint, time.time() - t0, workers)
    (Path(out) / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
