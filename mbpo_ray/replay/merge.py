"""Several replay stores -> one new store (``mbpo-ray replay merge``): for example a recipe's
demonstrations and SFT rollouts together with the episodes a training run collected, so that a world
model or critic trains on all of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mbpo_ray.replay.schema import ReplayError
from mbpo_ray.replay.store import ReplayStore


@dataclass(frozen=True)
class MergeResult:
    episodes: int  # episodes written to the new store
    duplicates: int  # episodes skipped because an earlier source had the same episode id
    by_source: dict[str, int]  # episodes written per source store (in the order given)


def merge_stores(out: str, sources: Mapping[str, ReplayStore], progress: Callable[[int], None] | None = None,
                 max_episodes: int | None = None) -> MergeResult:
    """Copy every episode of the open stores ``sources`` (name -> store, in order; an episode id seen
    before is skipped) into a new store at ``out``, or only the first ``max_episodes`` of them (a store
    that a run went on appending to, taken as it was earlier). The sources must share one spec (image
    size, chunk size, dimensions). The new store is written in a hidden folder next to ``out`` and renamed at the
    end, so a failure leaves nothing behind; an existing ``out`` is an error, never appended to or
    overwritten."""
    if not sources:
        raise ReplayError("nothing to merge: give at least one source store")
    if max_episodes is not None and max_episodes < 1:
        raise ReplayError(f"max_episodes={max_episodes}: give a positive number of episodes, or none for all")
    target = Path(out)
    if target.exists():
        raise ReplayError(f"{out} exists; nothing was written: merge into a new folder")
    (first, spec), *rest = ((path, store.spec) for path, store in sources.items())
    for path, other in rest:
        if other != spec:
            raise ReplayError(f"{path} has {other}, {first} has {spec}: only stores with one spec can be merged")
    tmp = target.with_name(f".{target.name}.merging")
    shutil.rmtree(tmp, ignore_errors=True)
    seen: set[str] = set()
    by_source: dict[str, int] = {}
    duplicates = 0
    try:
        dst = ReplayStore.create(str(tmp), spec)
        for path, store in sources.items():
            by_source[path] = 0
            for meta in store.episodes:
                if max_episodes is not None and len(seen) >= max_episodes:
                    break
                if meta.episode_id in seen:
                    duplicates += 1
                else:
                    dst.append(store.read_episode(meta.episode_id))
                    seen.add(meta.episode_id)
                    by_source[path] += 1
                if progress is not None:
                    progress(1)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(episodes=len(seen), duplicates=duplicates, by_source=by_source)
