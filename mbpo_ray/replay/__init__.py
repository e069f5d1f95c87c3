"""Arrow replay store shared by env runners, world-model workers and learners."""

from mbpo_ray.replay.episode import EpisodeBuilder, new_episode_id
from mbpo_ray.replay.schema import SCHEMA_VERSION, ReplayError, StoreSpec, frames, make_schema
from mbpo_ray.replay.store import EpisodeMeta, ReplayStore

__all__ = [
    "SCHEMA_VERSION",
    "EpisodeBuilder",
    "EpisodeMeta",
    "ReplayError",
    "ReplayStore",
    "StoreSpec",
    "frames",
    "make_schema",
    "new_episode_id",
]
