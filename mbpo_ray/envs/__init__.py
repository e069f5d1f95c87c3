"""Environments: real LIBERO with chunked execution, and a scripted expert for demonstrations."""

from mbpo_ray.envs.libero_env import (
    ACTION_DIM,
    PROPRIO_DIM,
    ChunkResult,
    EnvError,
    LiberoEnv,
    Observation,
)

__all__ = ["ACTION_DIM", "PROPRIO_DIM", "ChunkResult", "EnvError", "LiberoEnv", "Observation"]
