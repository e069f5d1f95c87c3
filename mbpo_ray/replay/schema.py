"""The replay store's schema: one row per action chunk of one episode.

A row holds the observation at a chunk boundary (head and wrist frames, proprio), the action chunk
executed from it, and what followed (reward, success, done). Every episode ends with one terminal
row (``is_last``) that carries the final observation and no actions, so the observation after row
``k`` is always row ``k + 1`` of the same episode: exactly the frame-skip transition the world model
learns, ``(obs_t, a_t..a_{t+H-1}) -> obs_{t+H}``.

=============== ===================================== ===========================================
column          type                                  meaning
=============== ===================================== ===========================================
episode_id      string                                unique across writers (random 64-bit hex)
chunk_index     int32                                 0, 1, 2, ... within the episode
step            int32                                 env step at the chunk start (after settle)
suite           string                                LIBERO suite, e.g. ``libero_spatial``
task_id         int16                                 task index within the suite
instruction     string                                the task's language instruction
head            fixed_size_list<uint8>[S*S*3]         agentview frame, upright, row-major HxWx3
wrist           fixed_size_list<uint8>[S*S*3]         eye-in-hand frame, upright
proprio         fixed_size_list<float32>[8]           eef xyz, eef axis-angle, two finger joints
actions         fixed_size_list<float32>[H*7]         the chunk, row-major (H, 7); zero padded
num_actions     int16                                 valid actions in the chunk (0 on is_last)
reward          float32                               sparse reward collected during the chunk
success         bool                                  env success predicate after the chunk
done            bool                                  the episode ended with this chunk
is_last         bool                                  terminal row: observation only
source          string                                ``demo`` | ``real`` | ``imagined``
policy_version  int64                                 weights version that acted (-1: scripted/human)
time            timestamp[ms, UTC]                    when the row was recorded
sim_state       list<float64>                         flattened MuJoCo state (empty if unknown)
=============== ===================================== ===========================================

The store-wide constants (image size S, chunk size H, action and proprio sizes) live in
``store.json``; every append is checked against them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pyarrow as pa

from mbpo_ray.config import SOURCES

SCHEMA_VERSION = 1
COMPRESSIONS = ("none", "lz4", "zstd")


class ReplayError(RuntimeError):
    """The replay store is missing, corrupt, or does not match what is being written."""


@dataclass(frozen=True)
class StoreSpec:
    image_size: int = 128
    chunk_size: int = 10
    action_dim: int = 7
    proprio_dim: int = 8
    compression: str = "none"  # Arrow IPC buffer compression; "none" keeps reads zero-copy
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ReplayError(
                f"compression={self.compression!r} is not allowed: choose one of {', '.join(COMPRESSIONS)}"
            )
        for name in ("image_size", "chunk_size", "action_dim", "proprio_dim"):
            if int(getattr(self, name)) <= 0:
                raise ReplayError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def image_bytes(self) -> int:
        return self.image_size * self.image_size * 3

    def schema(self) -> pa.Schema:
        return make_schema(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> StoreSpec:
        try:
            data = json.loads(text)
            spec = cls(**data)
        except (ValueError, TypeError) as exc:
            raise ReplayError(f"{where} is corrupt ({exc}); it must be the store.json the store wrote") from None
        if spec.schema_version != SCHEMA_VERSION:
            raise ReplayError(
                f"{where} has schema version {spec.schema_version}; this mbpo-ray reads version {SCHEMA_VERSION}"
            )
        return spec


def make_schema(spec: StoreSpec) -> pa.Schema:
    return pa.schema(
        [
            ("episode_id", pa.string()),
            ("chunk_index", pa.int32()),
            ("step", pa.int32()),
            ("suite", pa.string()),
            ("task_id", pa.int16()),
            ("instruction", pa.string()),
            ("head", pa.list_(pa.uint8(), spec.image_bytes)),
            ("wrist", pa.list_(pa.uint8(), spec.image_bytes)),
            ("proprio", pa.list_(pa.float32(), spec.proprio_dim)),
            ("actions", pa.list_(pa.float32(), spec.chunk_size * spec.action_dim)),
            ("num_actions", pa.int16()),
            ("reward", pa.float32()),
            ("success", pa.bool_()),
            ("done", pa.bool_()),
            ("is_last", pa.bool_()),
            ("source", pa.string()),
            ("policy_version", pa.int64()),
            ("time", pa.timestamp("ms", tz="UTC")),
            ("sim_state", pa.list_(pa.float64())),
        ],
        metadata={"mbpo_ray.schema_version": str(SCHEMA_VERSION)},
    )


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ReplayError(f"source={source!r} is not allowed: choose one of {', '.join(SOURCES)}")


def frames(table: pa.Table, column: str, image_size: int):
    """(N, S, S, 3) uint8 view of an image column (no copy when the table has one chunk)."""
    import numpy as np

    arr = table.column(column)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    parts = [np.asarray(c.flatten().to_numpy(zero_copy_only=False)) for c in chunks]
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return flat.reshape(-1, image_size, image_size, 3)
