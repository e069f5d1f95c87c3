"""Build the rows of one episode in the replay schema."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from mbpo_ray.replay.schema import ReplayError, StoreSpec, check_source


def new_episode_id() -> str:
    return uuid.uuid4().hex[:16]


class EpisodeBuilder:
    """Collects chunk rows of one episode; :meth:`finish` adds the terminal row.

    ``add_chunk(obs_before, actions, ...)`` is called once per executed chunk with the observation
    *at the start* of the chunk; ``finish(final_obs)`` with the observation after the last chunk.
    """

    def __init__(
        self,
        spec: StoreSpec,
        *,
        suite: str,
        task_id: int,
        instruction: str,
        source: str,
        policy_version: int = -1,
        episode_id: str | None = None,
    ):
        check_source(source)
        self.spec = spec
        self.episode_id = episode_id or new_episode_id()
        self._const = dict(suite=suite, task_id=int(task_id), instruction=instruction, source=source,
                           policy_version=int(policy_version))
        self._rows: list[dict] = []
        self._step = 0

    def __len__(self) -> int:
        return len(self._rows)

    def _check_frame(self, name: str, frame: np.ndarray) -> np.ndarray:
        s = self.spec.image_size
        frame = np.asarray(frame)
        if frame.shape != (s, s, 3) or frame.dtype != np.uint8:
            raise ReplayError(
                f"{name} frame has shape {frame.shape} dtype {frame.dtype}; this store holds "
                f"({s}, {s}, 3) uint8 frames (image_size={s}): resize, or write to a store made for this size"
            )
        return frame

    def _row(self, obs, actions, reward, success, done, is_last, sim_state) -> dict:
        h, a = self.spec.chunk_size, self.spec.action_dim
        actions = np.asarray(actions, dtype=np.float32).reshape(-1, a) if actions is not None else np.zeros((0, a))
        if len(actions) > h:
            raise ReplayError(f"action chunk has {len(actions)} actions; this store's chunk_size is {h}")
        padded = np.zeros((h, a), dtype=np.float32)
        padded[: len(actions)] = actions
        proprio = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
        if proprio.shape != (self.spec.proprio_dim,):
            raise ReplayError(f"proprio has shape {proprio.shape}; this store holds ({self.spec.proprio_dim},)")
        row = dict(
            episode_id=self.episode_id,
            chunk_index=len(self._rows),
            step=self._step,
            head=self._check_frame("head", obs.head),
            wrist=self._check_frame("wrist", obs.wrist),
            proprio=proprio,
            actions=padded.reshape(-1),
            num_actions=len(actions),
            reward=float(reward),
            success=bool(success),
            done=bool(done),
            is_last=is_last,
            time=int(time.time() * 1000),
            sim_state=np.zeros(0) if sim_state is None else np.asarray(sim_state, dtype=np.float64).ravel(),
            **self._const,
        )
        self._step += len(actions)
        return row

    def add_chunk(self, obs, actions, reward: float, success: bool, done: bool, sim_state=None) -> None:
        if self._rows and self._rows[-1]["is_last"]:
            raise ReplayError("episode already finished")
        self._rows.append(self._row(obs, actions, reward, success, done, False, sim_state))

    def finish(self, final_obs, sim_state=None) -> pa.RecordBatch:
        last = self._rows[-1] if self._rows else None
        self._rows.append(
            self._row(final_obs, None, 0.0, bool(last and last["success"]), True, True, sim_state)
        )
        return rows_to_batch(self.spec, self._rows)


def rows_to_batch(spec: StoreSpec, rows: list[dict]) -> pa.RecordBatch:
    """Column-wise conversion of row dicts (as built above) into one record batch."""
    schema = spec.schema()
    cols = []
    for field in schema:
        values = [r[field.name] for r in rows]
        if pa.types.is_fixed_size_list(field.type):
            flat = np.concatenate([np.asarray(v).reshape(-1) for v in values])
            inner = pa.array(flat, type=field.type.value_type)
            cols.append(pa.FixedSizeListArray.from_arrays(inner, field.type.list_size))
        elif pa.types.is_list(field.type):
            cols.append(pa.array([np.asarray(v) for v in values], type=field.type))
        else:
            cols.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def steps_to_episode(spec: StoreSpec, observe: Callable[[int], object], actions: np.ndarray, success: bool,
                     states: np.ndarray | None = None, **meta) -> pa.RecordBatch:
    """One recorded episode of per-step data -> chunk rows. ``observe(t)`` is the observation before
    ``actions[t]``; the effect of the very last action is never observed, so that action is dropped and
    the terminal row holds ``observe(T-1)``. Chunks are aligned to the end: the last one ends at ``T-1``
    and carries the episode's success, every chunk is H actions long except the first, which holds the
    remaining ``(T-1) mod H`` (so a successful chunk is never a short one, as in the live env).
    ``meta``: :class:`EpisodeBuilder`'s keyword arguments."""
    t_len = len(actions)
    if t_len < 2 or actions.ndim != 2 or actions.shape[1] != spec.action_dim:
        raise ReplayError(f"actions have shape {actions.shape}; need (T>=2, {spec.action_dim})")
    b = EpisodeBuilder(spec, **meta)
    h, last = spec.chunk_size, t_len - 1
    starts = ([0] if last % h else []) + list(range(last % h, last, h))
    for j, (t, end) in enumerate(zip(starts, [*starts[1:], last], strict=True)):
        final = j == len(starts) - 1
        b.add_chunk(observe(t), actions[t:end], reward=float(final and success), success=final and success,
                    done=final, sim_state=None if states is None else states[t])
    return b.finish(observe(last), None if states is None else states[last])
