"""Imagined batches kept on disk for a run that would imagine the same one (``mbpo.batch_cache=DIR``).

A null control (``mbpo.null_control``) learns from the same imagined branches as its method, chosen
blind to the world model's answer; with a shared cache it reads the method's first batch instead of
imagining it again, which is most of an imagined self-imitation run's time. A batch is named by
everything it depends on: the run's configuration except what only the learner reads of it
(``mbpo.null_control``) and the cache's own folder, the files of the starting policy and world model,
the episodes of the store parts it was drawn from, its seed and its weight versions. Only batches on
the starting weights (versions 0 and 0) are kept: a later version's weights are the run's own, and
two runs that learn differently hold different weights under the same version number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mbpo_ray.protocol import ImagineResult, Versions
from mbpo_ray.rl.imagine import Branches

LEARNER_ONLY = ("null_control", "batch_cache")  # mbpo fields that do not change what is imagined


def _digest_files(h, folder: str) -> None:
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)


def batch_key(config: dict, policy_dir: str, world_model_dir: str, store, parts, seed: int,
              versions: Versions) -> Path | None:
    """Where a batch is kept: ``mbpo.batch_cache``/NAME.npz (None without a cache, or past the starting
    weights). ``config``: the run's configuration as a dict; ``store``, ``parts``: the replay store and
    its parts drawn from."""
    if not config["mbpo"]["batch_cache"] or (versions.policy, versions.world_model) != (0, 0):
        return None
    episodes = [store.episodes[i] for i in store.episodes_in(parts)]
    cfg = {**config, "mbpo": {k: v for k, v in config["mbpo"].items() if k not in LEARNER_ONLY}}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(json.dumps([[e.episode_id, e.rows, e.env_steps, e.success, e.source] for e in episodes]).encode())
    h.update(f"seed={seed}".encode())
    for folder in (policy_dir, world_model_dir):
        _digest_files(h, folder)
    return Path(os.path.expanduser(config["mbpo"]["batch_cache"])) / f"{h.hexdigest()[:32]}.npz"


def save_batch(path: Path, br: Branches) -> None:
    """``br`` as ``path`` (written under another name, then renamed: never half a file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for f in dataclasses.fields(Branches):
        v = getattr(br, f.name)
        arrays[f.name] = np.array(v, dtype=str) if isinstance(v, list) else np.asarray(v)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


def load_batch(path: Path) -> Branches | None:
    if not Path(path).is_file():
        return None
    with np.load(path) as z:
        fields = {}
        for f in dataclasses.fields(Branches):
            v = z[f.name]
            fields[f.name] = ([str(x) for x in v] if v.dtype.kind == "U" else
                              int(v) if v.ndim == 0 else v)
    return Branches(**fields)


def imagine_cached(imagine: Callable[[], tuple[list, dict]], path: Path | None, versions: Versions):
    """``imagine()``'s (results, stats), or the batch kept at ``path`` (:func:`batch_key`) as one result
    (stats ``cached``: 1); a batch imagined with a path is kept there."""
    if path is not None:
        br = load_batch(path)
        if br is not None:
            return [ImagineResult(br, 0.0, 0.0, os.getpid(), versions)], {"seconds": 0.0, "redone_shares": 0, "workers": 0,
                                                                  "sync_seconds": 0.0, "cached": 1}
    results, stats = imagine()
    if path is not None:
        save_batch(path, Branches.concat([r.branches for r in results]))
    return results, {**stats, "cached": 0}
