"""Sibling branches: several sampled continuations of the policy from one recorded state, run in LIBERO.

Every imagined operator needs the world model to tell apart the branches of one start state, which
differ only in their actions. Demonstrations and whole rollouts never show it two continuations of
one state. ``mbpo-ray branches`` makes that data: start states drawn from a store as the loop draws
them (``mbpo.start_sampler``, an equal share per task, :func:`~mbpo_ray.replay.samplers.draw_groups`),
``mbpo.group_size`` sampled branches of ``mbpo.n_chunks`` chunks from each, run in LIBERO by env
runners (the policy acting on the real frames, :func:`~mbpo_ray.rl.online.run_policy_branch`), each
appended to the store as an episode of source ``branch`` with its proprio and simulator state per row.

A branch's episode id names its start and its group: ``{start id}~s{seed}g{group}b{k}``
(:func:`sibling_group` recovers the group). A run that stops part way is continued by running the
same command again: branches the store already holds are not run twice. Branch episodes are never
start states themselves (``samplers._eligible``): they end where the branch ends, not where a task does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def branch_id(start_id: str, seed: int, group: int, k: int) -> str:
    """The episode id of branch ``k`` of ``group`` in collection ``seed``, from start ``start_id``."""
    return f"{start_id}~s{seed}g{group}b{k}"


def sibling_group(episode_id: str) -> str:
    """The group a branch episode belongs to (its id without the trailing ``b{k}``)."""
    return episode_id[: episode_id.rindex("b")]


def start_of(episode_id: str) -> str:
    """The start state a branch episode began at (``episode id:chunk`` of the recorded episode)."""
    return episode_id.split("~")[0]


def collection(episodes, seed: int | None = None) -> list:
    """The branch episodes of ``episodes`` (a store's index), of collection ``seed`` when given."""
    return [e for e in episodes if e.source == "branch" and (seed is None or f"~s{seed}g" in e.episode_id)]


def sibling_jobs(store, checkpoint: str, seed: int, mc, policy_version: int = -1) -> list[dict]:
    """The ``EnvRunner.policy_branch`` jobs of one collection: ``mc.branches / mc.group_size`` start
    states drawn from ``store`` with ``mc`` (sampler, window, tasks) at iteration 0, each branched
    ``mc.group_size`` times with its own sampling seed; those the store already holds left out."""
    from mbpo_ray.replay.samplers import draw_groups, start_ids
    from mbpo_ray.seeds import derive_seed

    store.refresh()
    ep, chunk, group = draw_groups(store.episodes, mc.branches, mc.task_ids, np.random.default_rng(seed), 0, mc)
    table = store.read_start_states(ep, chunk, ["suite", "task_id", "sim_state"])
    sims = [np.asarray(s, np.float64) for s in table.column("sim_state").to_pylist()]
    if any(len(s) == 0 for s in sims):
        raise ValueError("some start states have no recorded simulator state: branch from a store written "
                         "by `mbpo-ray collect` or `mbpo-ray eval --to-store`")
    have = {e.episode_id for e in store.episodes}
    jobs = []
    for k, (start, g) in enumerate(zip(start_ids(store.episodes, ep, chunk), group, strict=True)):
        eid = branch_id(start, seed, int(g), k % mc.group_size)
        if eid in have:
            continue
        jobs.append({"checkpoint": checkpoint, "suite": table.column("suite")[k].as_py(),
                     "task_id": int(table.column("task_id")[k].as_py()), "sim_state": sims[k],
                     "n_chunks": mc.n_chunks, "seed": derive_seed(seed, k) % 2**31, "to_store": True,
                     "episode_id": eid, "policy_version": policy_version})
    return jobs


@dataclass(frozen=True)
class SiblingSummary:
    """What one collection's branches show: how often siblings end differently."""

    branches: int
    groups: int
    success_per_branch: float
    groups_with_spread: int  # groups whose branches do not all end alike
    env_steps: int

    def line(self) -> str:
        return (f"{self.branches} branches from {self.groups} start states: success per branch "
                f"{100 * self.success_per_branch:.1f}%, {self.groups_with_spread} start states whose branches "
                f"end differently, {self.env_steps} env steps")


def summarize(store, seed: int | None = None) -> SiblingSummary:
    """Every ``branch`` episode in ``store`` (of one collection's ``seed`` when given), by group."""
    store.refresh()
    eps = collection(store.episodes, seed)
    groups: dict[str, list[bool]] = {}
    for e in eps:
        groups.setdefault(sibling_group(e.episode_id), []).append(bool(e.success))
    spread = sum(0 < sum(v) < len(v) for v in groups.values())
    rate = float(np.mean([e.success for e in eps])) if eps else 0.0
    return SiblingSummary(len(eps), len(groups), rate, spread, int(sum(e.env_steps for e in eps)))
