"""The typed messages between the driver and its actors (what crosses a Ray call).

A piece of imagination names everything it depends on: the weight versions (:class:`Versions`) and
the replay-store parts its start states may come from. Then a batch does not depend on when a
replica happened to run it (before or after the learner published, before or after real episodes
were appended), so a run that overlaps imagination with updates (``mbpo.max_staleness=1``) and a
share redone on another replica both give the same branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbpo_ray.rl.imagine import Branches


@dataclass(frozen=True)
class Versions:
    """Weight versions in the weight store; 0 = the weights a replica was started from."""

    policy: int = 0
    world_model: int = 0


@dataclass(frozen=True)
class ImagineRequest:
    """``n`` branches (whole groups) with ``seed``; start states from ``tasks`` (all when None) and only
    from the store parts named in ``parts`` (all the replica sees when None); weights ``versions``
    (the newest published when None)."""

    n: int
    seed: int
    tasks: tuple[int, ...] | None = None
    iteration: int = 0
    versions: Versions | None = None
    parts: tuple[str, ...] | None = None


@dataclass
class ImagineResult:
    branches: Branches
    seconds: float
    sync_seconds: float
    pid: int
    versions: Versions = field(default_factory=Versions)
    node: str = ""  # the address of the node that imagined it

    @property
    def chunk_transitions(self) -> int:
        return self.branches.steps
