"""Where imagined branches start: pure functions of (the store's episode index, rng, iteration).

A sampler returns (episode positions in ``store.episodes``, chunk indices); the store reads just
those rows (:meth:`ReplayStore.read_start_states`).

* ``uniform``: every stored chunk boundary equally likely (episodes in proportion to their chunks).
* ``reverse``: a reverse curriculum. From a successful episode only its last ``window`` chunk
  boundaries are drawn (uniformly), so a short branch can still reach the outcome; ``window`` starts
  at ``mbpo.start_window`` and widens by ``mbpo.start_window_growth`` chunks per iteration, moving the
  starts back towards the beginning of the task. Every state of a failed episode (a policy rollout
  that did not succeed) is a state the policy fails from: those are drawn uniformly, with the
  episode's weight multiplied by ``mbpo.fail_weight``.
* ``grasp``: starts just before the policy commits to a grasp: the ``window`` chunk boundaries up to
  and including each episode's ``grasp_chunk`` (the first chunk whose actions close the gripper),
  ``window`` as for ``reverse``, failed episodes weighted by ``mbpo.fail_weight``. From there a short
  branch plays the first grasp attempt (``benchmarks/prefix_signal.py --sampler grasp`` measures how
  much of the episode's outcome that decides: for the recipe's SFT policy, which grasps again after
  a miss, 7%).
* ``initial``: the first state of every episode (the task's init state after LIBERO's settle steps),
  episodes equally likely: with ``n_chunks`` as long as an episode, whole episodes are imagined.

:func:`chunks_to_go` gives each start's distance to its episode's end, the bucket under which the
driver logs imagined success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mbpo_ray.replay.schema import ReplayError

if TYPE_CHECKING:
    from mbpo_ray.replay.store import EpisodeMeta

Draw = tuple[np.ndarray, np.ndarray]


def _eligible(episodes: list[EpisodeMeta], task_id: int | None) -> np.ndarray:
    """Episodes whose states can start a branch: any with a chunk, of ``task_id`` when given, except
    sibling branches (source ``branch``: they end where the branch ended, not where the task did)."""
    idx = np.array([i for i, e in enumerate(episodes) if e.chunks > 0 and e.source != "branch"
                    and (task_id is None or e.task_id == task_id)], dtype=np.int64)
    if not len(idx):
        where = "" if task_id is None else f" for task {task_id}"
        raise ReplayError(f"no start states{where} in the store: collect data first")
    return idx


def uniform(episodes: list[EpisodeMeta], n: int, rng: np.random.Generator, task_id: int | None = None,
            iteration: int = 0, mc=None) -> Draw:
    idx = _eligible(episodes, task_id)
    chunks = np.array([episodes[i].chunks for i in idx], dtype=np.float64)
    ep = idx[rng.choice(len(idx), size=n, p=chunks / chunks.sum())]
    sizes = np.array([episodes[i].chunks for i in ep], dtype=np.int64)
    return ep, (rng.random(n) * sizes).astype(np.int64)


def _window(mc, iteration: int) -> int:
    return mc.start_window + int(mc.start_window_growth * iteration)


def _draw_in_spans(span: np.ndarray, success: np.ndarray, n: int, rng: np.random.Generator, mc
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(positions, offsets): ``n`` episodes drawn in proportion to the ``span`` of boundaries each
    offers (failed ones ``mc.fail_weight`` times as often), and a uniform offset within each span."""
    weight = span * np.where(success, 1.0, mc.fail_weight)
    if weight.sum() <= 0:
        raise ReplayError("mbpo.fail_weight=0 leaves no start states: the store holds only failed episodes")
    pick = rng.choice(len(span), size=n, p=weight / weight.sum())
    return pick, (rng.random(n) * span[pick]).astype(np.int64)


def reverse(episodes: list[EpisodeMeta], n: int, rng: np.random.Generator, task_id: int | None = None,
            iteration: int = 0, mc=None) -> Draw:
    idx = _eligible(episodes, task_id)
    chunks = np.array([episodes[i].chunks for i in idx], dtype=np.int64)
    success = np.array([episodes[i].success for i in idx], dtype=bool)
    span = np.where(success, np.minimum(chunks, _window(mc, iteration)), chunks)  # boundaries each episode offers
    pick, offset = _draw_in_spans(span, success, n, rng, mc)  # offset from the first boundary offered
    return idx[pick], chunks[pick] - span[pick] + offset


def grasp(episodes: list[EpisodeMeta], n: int, rng: np.random.Generator, task_id: int | None = None,
          iteration: int = 0, mc=None) -> Draw:
    idx = np.array([i for i in _eligible(episodes, task_id) if episodes[i].grasp_chunk >= 0], dtype=np.int64)
    if not len(idx):
        raise ReplayError("start_sampler=grasp: no stored episode closes the gripper (the last action dimension "
                          "never > 0); use mbpo.start_sampler=reverse")
    last = np.array([episodes[i].grasp_chunk for i in idx], dtype=np.int64)  # the boundary before the grasp
    success = np.array([episodes[i].success for i in idx], dtype=bool)
    span = np.minimum(last + 1, _window(mc, iteration))
    pick, back = _draw_in_spans(span, success, n, rng, mc)  # back from the grasp's boundary
    return idx[pick], last[pick] - back


def initial(episodes: list[EpisodeMeta], n: int, rng: np.random.Generator, task_id: int | None = None,
            iteration: int = 0, mc=None) -> Draw:
    idx = _eligible(episodes, task_id)
    return idx[rng.choice(len(idx), size=n)], np.zeros(n, dtype=np.int64)


SAMPLERS: dict[str, Callable[..., Draw]] = {"uniform": uniform, "reverse": reverse, "grasp": grasp,
                                            "initial": initial}


def draw_groups(episodes: list[EpisodeMeta], n: int, tasks, rng: np.random.Generator, iteration: int, mc
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n / mbpo.group_size`` start states drawn by ``mbpo.start_sampler`` (an equal share per task
    of ``tasks``; all tasks when empty), each repeated ``group_size`` times: (episode positions,
    chunk indices, group of each branch). The world-model workers and the simulator branches draw
    their starts this way."""
    if n % mc.group_size:
        raise ValueError(f"{n} branches are not whole groups of mbpo.group_size={mc.group_size}")
    starts = n // mc.group_size
    draw = SAMPLERS[mc.start_sampler]
    task = rng.choice(tasks, size=starts) if len(tasks) else np.full(starts, -1)
    picks = [draw(episodes, int((task == t).sum()), rng, None if t < 0 else int(t), iteration, mc)
             for t in np.unique(task)]
    ep, chunk = (np.repeat(np.concatenate([p[i] for p in picks]), mc.group_size) for i in (0, 1))
    return ep, chunk, np.repeat(np.arange(starts), mc.group_size)


def chunks_to_go(episodes: list[EpisodeMeta], ep: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Chunk steps from each start state to the end of its episode (1 = the episode's last chunk)."""
    return np.array([episodes[int(e)].chunks for e in ep], dtype=np.int64) - np.asarray(chunk, np.int64)


def start_ids(episodes: list[EpisodeMeta], ep: np.ndarray, chunk: np.ndarray) -> list[str]:
    """``"episode_id:chunk_index"`` of each start state (what ``Branches.start_ids`` holds)."""
    return [f"{episodes[int(e)].episode_id}:{int(c)}" for e, c in zip(ep, chunk, strict=True)]


TO_GO_BUCKETS = ((1, 2), (3, 4), (5, 8), (9, 10**9))  # inclusive ranges of chunks_to_go in the logs


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"


def success_by_bucket(br) -> dict[str, float]:
    """Imagined success per branch, by how many chunks the start state lay before its episode's end."""
    if len(br.to_go) != len(br):
        return {}
    hit = br.terminal.any(axis=1)
    out = {}
    for lo, hi in TO_GO_BUCKETS:
        sel = (br.to_go >= lo) & (br.to_go <= hi)
        if sel.any():
            out[f"imagine/success_to_go_{bucket_name(lo, hi)}"] = float(hit[sel].mean())
            out[f"imagine/starts_to_go_{bucket_name(lo, hi)}"] = int(sel.sum())
    return out
