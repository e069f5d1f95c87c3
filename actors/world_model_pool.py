"""A pool of world-model workers that grows and shrinks with demand and replaces dead replicas.

Scaling decision: the loop runs imagination for the next batch while the learner updates on the
current one; when imagination took longer than the update (the learner waited on samples), the
pool grows by one replica, up to ``max``; when one replica fewer would still have kept up, it
shrinks by one, down to ``min``. The target is handed to the Ray autoscaler with
``ray.autoscaler.sdk.request_resources`` (one bundle per replica), so on a cluster the pending
replicas make it add GPU nodes; new replicas pull the newest weights themselves on start.

Fault tolerance: a replica that dies mid-call is removed and a new one started; its share of the
batch is redone with the same seed on a live replica, so every branch is produced exactly once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from mbpo_ray.seeds import derive_seed

ACTOR_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError)


class WorldModelPool:
    def __init__(self, make_worker: Callable[[], object], min_workers: int, max_workers: int,
                 bundle: dict[str, float], ready_timeout_s: float = 900.0):
        self.make_worker, self.min, self.max, self.bundle = make_worker, min_workers, max_workers, bundle
        self.workers: list = []
        self.replaced = 0
        self.ready_timeout_s = ready_timeout_s
        self._resize(min_workers)

    def __len__(self) -> int:
        return len(self.workers)

    def _request(self, n: int) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(self.bundle) for _ in range(n)])

    def _resize(self, n: int) -> None:
        self._request(n)
        while len(self.workers) < n:
            self.workers.append(self.make_worker())
        while len(self.workers) > n:
            ray.kill(self.workers.pop())
        ray.get([w.pid.remote() for w in self.workers], timeout=self.ready_timeout_s)  # engines started

    def imagine(self, n: int, seed: int, task_ids: list[int] | None, iteration: int = 0,
                group_size: int = 1) -> tuple[list[dict], dict]:
        """``n`` branches split over the replicas in whole groups of ``group_size`` (branches of one
        start state); (per-share results, stats). Shares are seeded by their index, so a redone share
        reproduces the lost one exactly."""
        shares = [s * group_size for s in _shares(n // group_size, len(self.workers))]
        jobs = {i: (s, derive_seed(seed, i)) for i, s in enumerate(shares) if s > 0}
        results: dict[int, dict] = {}
        t0 = time.perf_counter()
        pending = {self.workers[i % len(self.workers)].imagine.remote(s, sd, task_ids, iteration): (i, i % len(self.workers))
                   for i, (s, sd) in jobs.items()}
        redone = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, w = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except ACTOR_ERRORS:
                self._replace(w)
                redone += 1
                s, sd = jobs[i]
                pending[self.workers[w].imagine.remote(s, sd, task_ids, iteration)] = (i, w)
        stats = {"seconds": time.perf_counter() - t0, "redone_shares": redone, "workers": len(self.workers),
                 "sync_seconds": max(r.get("sync_seconds", 0.0) for r in results.values())}
        return [results[i] for i in sorted(results)], stats

    def _replace(self, index: int) -> None:
        with contextlib.suppress(Exception):  # already gone
            ray.kill(self.workers[index])
        self.workers[index] = self.make_worker()
        self.replaced += 1

    def autoscale(self, imagine_s: float, update_s: float) -> int:
        """Grow when the learner waited on samples, shrink when one replica fewer would keep up."""
        n = len(self.workers)
        target = n
        if imagine_s > 1.1 * update_s and n < self.max:
            target = n + 1
        elif n > self.min and imagine_s * n / (n - 1) < 0.8 * update_s:
            target = n - 1
        if target != n:
            self._resize(target)
        return target


def _shares(n: int, k: int) -> list[int]:
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]
