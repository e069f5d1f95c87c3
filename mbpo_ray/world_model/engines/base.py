"""The world-model engine interface and its registry (backends import lazily)."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from mbpo_ray.world_model.layout import NO, YES, TokenLayout

# name -> "module:Class"; a backend's heavy imports happen only when it is built
ENGINES = {
    "hf": "mbpo_ray.world_model.engines.hf:HFEngine",
    "vllm": "mbpo_ray.world_model.engines.vllm_engine:VLLMEngine",
}


@dataclass
class Imagined:
    """One imagined transition: next head and wrist codes, P(success), the raw generated tokens."""

    head: np.ndarray  # (K,) codebook indices
    wrist: np.ndarray  # (K,)
    p_yes: float
    tokens: list[int]
    # mean surprisal (-log p under the model's raw distribution) of the generated head and wrist code
    # tokens: an estimate of the model's per-token entropy at this transition, high where it does not know
    uncertainty: float = float("nan")


class WorldModelEngine(ABC):
    """Generates the next observation after an action chunk: head view, then wrist view, then reward."""

    def __init__(self, checkpoint: str, layout: TokenLayout):
        self.checkpoint = checkpoint
        self.layout = layout
        self.version = 0

    @abstractmethod
    def imagine(self, prompts: list[list[int]], temperature: float = 0.0, seed: int | None = None) -> list[Imagined]:
        """One transition per prompt (see ``TokenLayout.prompt``); temperature 0 = greedy.

        With ``seed`` each request's sampling is reproducible on its own; without, the engine's own
        random stream is used (cheaper for large batches).
        """

    @abstractmethod
    def update_weights(self, state_dict: dict, version: int) -> None:
        """Replace the weights in place; ``version`` must increase."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def _check_version(self, version: int) -> None:
        if version <= self.version:
            raise ValueError(f"weights version {version} is not newer than the engine's {self.version}")

    def _imagined(self, prompt: list[int], tokens: list[int], logit_yes: float, logit_no: float,
                  uncertainty: float = float("nan")) -> Imagined:
        head, wrist = self.layout.split_target(tokens, prompt)
        p_yes = float(1.0 / (1.0 + np.exp(logit_no - logit_yes)))
        return Imagined(head=head, wrist=wrist, p_yes=p_yes, tokens=list(tokens), uncertainty=float(uncertainty))


def make_engine(name: str, checkpoint: str, layout: TokenLayout, **kwargs) -> WorldModelEngine:
    if name not in ENGINES:
        raise ValueError(f"world-model engine {name!r} is unknown: choose one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(checkpoint, layout, **kwargs)


__all__ = ["ENGINES", "NO", "YES", "Imagined", "WorldModelEngine", "make_engine"]
