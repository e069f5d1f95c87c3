"""Frame-skip transitions from the replay store, as token sequences for the world model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbpo_ray.replay import ReplayStore, frames
from mbpo_ray.world_model.layout import TokenLayout


@dataclass
class Episodes:
    """Rows of whole episodes (frames at the store's resolution) in one place."""

    ids: list[str]
    instruction: list[str]  # per episode
    row_episode: np.ndarray  # (R,) episode index of each row
    head: np.ndarray  # (R, S, S, 3)
    wrist: np.ndarray
    actions: np.ndarray  # (R, H, 7)
    num_actions: np.ndarray  # (R,)
    success: np.ndarray  # (R,) success after this row's chunk
    is_last: np.ndarray  # (R,)

    def transitions(self) -> np.ndarray:
        """Row indices k whose successor k+1 is the observation after k's chunk, for chunks of the
        full H actions only. A chunk cut short (by the step limit, or in data recorded before chunks
        ran to their end) would have to be padded, and padding is a cue the policy never produces in
        imagination: a model could learn to read the reward from it instead of from the frames."""
        return np.flatnonzero(~self.is_last & (self.num_actions == self.actions.shape[1]))


def load_episodes(store: ReplayStore, episode_ids: list[str]) -> Episodes:
    s, h, a = store.spec.image_size, store.spec.chunk_size, store.spec.action_dim
    cols = ["head", "wrist", "actions", "num_actions", "success", "is_last", "instruction"]
    parts = {k: [] for k in ("head", "wrist", "actions", "num", "success", "last", "ep")}
    instr = []
    for i, eid in enumerate(episode_ids):
        t = store.read_episode(eid, cols)
        parts["head"].append(frames(t, "head", s))
        parts["wrist"].append(frames(t, "wrist", s))
        parts["actions"].append(np.stack(t.column("actions").to_numpy(zero_copy_only=False)).reshape(-1, h, a))
        parts["num"].append(t.column("num_actions").to_numpy())
        parts["success"].append(t.column("success").to_numpy(zero_copy_only=False))
        parts["last"].append(t.column("is_last").to_numpy(zero_copy_only=False))
        parts["ep"].append(np.full(t.num_rows, i))
        instr.append(t.column("instruction")[0].as_py())
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Episodes(ids=list(episode_ids), instruction=instr, row_episode=cat["ep"], head=cat["head"],
                    wrist=cat["wrist"], actions=cat["actions"].astype(np.float32), num_actions=cat["num"],
                    success=cat["success"].astype(bool), is_last=cat["last"].astype(bool))


def split_episodes(store: ReplayStore, holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Held-out episodes drawn per task, so every task is seen in training and in the report."""
    rng = np.random.default_rng(seed)
    by_task: dict[tuple[str, int], list[str]] = {}
    for e in store.episodes:
        if e.chunks > 0:
            by_task.setdefault((e.suite, e.task_id), []).append(e.episode_id)
    train, test = [], []
    for ids in by_task.values():
        ids = list(rng.permutation(ids))
        n_test = int(round(holdout * len(ids))) if len(ids) > 1 else 0
        test += ids[:n_test]
        train += ids[n_test:]
    return train, test


def valid_actions(actions: np.ndarray, num: int) -> np.ndarray:
    return actions[: max(int(num), 0)]


def sequences(ep: Episodes, head_codes: np.ndarray, wrist_codes: np.ndarray, layout: TokenLayout,
              rows: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt, target) token lists of the transitions starting at ``rows``."""
    prompts, targets = [], []
    for k in rows:
        instr = ep.instruction[ep.row_episode[k]]
        prompts.append(layout.prompt(instr, head_codes[k], wrist_codes[k],
                                     valid_actions(ep.actions[k], ep.num_actions[k])))
        targets.append(layout.target(head_codes[k + 1], wrist_codes[k + 1], bool(ep.success[k]),
                                     head_codes[k], wrist_codes[k]))
    return prompts, targets
