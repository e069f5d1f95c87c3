"""A pool of world-model workers that grows and shrinks with demand and replaces dead replicas.

Scaling decision: the loop runs imagination for the next batch while the learner updates on the
current one; when imagination took longer than the update (the learner waited on samples), the
pool grows by one replica, up to ``max``; when one replica fewer would still have kept up, it
shrinks by one, down to ``min``. The target is handed to the Ray autoscaler with
``ray.autoscaler.sdk.request_resources`` (one bundle per replica), so on a cluster the pending
replicas make it add GPU nodes; new replicas pull the weights each request names themselves.

Fault tolerance: a replica that dies mid-call, or that finishes no share within ``call_timeout_s``,
is killed and a new one started (the pool does this, never Ray: workers have ``max_restarts=0``);
its share of the batch is redone with the same seed, so every branch is produced exactly once. A
replica whose replacement fails to come up ``max_failures`` times in a row stops the run with a
:class:`PoolError` that names the last error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from mbpo_ray.connect import kill_actor
from mbpo_ray.protocol import ImagineRequest, ImagineResult, Versions
from mbpo_ray.seeds import derive_seed

ACTOR_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError)


class PoolError(RuntimeError):
    """The pool cannot keep its replicas up (they fail to start, or hang)."""


class WorldModelPool:
    def __init__(self, make_worker: Callable[[], object], min_workers: int, max_workers: int,
                 bundle: dict[str, float], ready_timeout_s: float = 900.0, call_timeout_s: float = 3600.0,
                 max_failures: int = 3):
        self.make_worker, self.min, self.max, self.bundle = make_worker, min_workers, max_workers, bundle
        self.workers: list = []
        self.replaced = 0
        self.ready_timeout_s, self.call_timeout_s, self.max_failures = ready_timeout_s, call_timeout_s, max_failures
        try:
            self._resize(min_workers)
        except BaseException:  # no replica is left running when the pool cannot start
            self.close()
            raise

    def close(self) -> None:
        for w in self.workers:
            kill_actor(w)
        self.workers = []

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
            kill_actor(self.workers.pop())
        for i in range(len(self.workers)):  # engines started; a dead one (also an old one) is replaced
            self._ensure_ready(i)

    def _ensure_ready(self, index: int) -> None:
        """Wait until replica ``index`` answers; replace it while it does not, ``max_failures`` times."""
        error: Exception | None = None
        for attempt in range(self.max_failures + 1):
            if attempt:
                self._replace(index, wait=False)
            try:
                ray.get(self.workers[index].pid.remote(), timeout=self.ready_timeout_s)
                return
            except (*ACTOR_ERRORS, GetTimeoutError) as exc:
                error = exc
        if isinstance(error, GetTimeoutError):  # never placed, or an engine that does not come up
            raise PoolError(f"world-model replica {index} did not start within {self.ready_timeout_s:g} s "
                            f"({self.max_failures + 1} tries): no node had room for {self.bundle}, or its engine "
                            "hung; a resource no node type provides is never placed: check mbpo.worker_resources "
                            "and mbpo.worker_gpus against the cluster's nodes")
        raise PoolError(f"world-model replica {index} failed to start {self.max_failures + 1} times in a row; "
                        f"last error: {str(error).strip().splitlines()[-1] if str(error).strip() else error!r}")

    def imagine(self, n: int, seed: int, task_ids: list[int] | None, iteration: int = 0, group_size: int = 1,
                versions: Versions | None = None, parts: tuple[str, ...] | None = None,
                ) -> tuple[list[ImagineResult], dict]:
        """``n`` branches split over the replicas in whole groups of ``group_size`` (branches of one
        start state), on the weight ``versions`` and store ``parts`` given (see :class:`ImagineRequest`);
        (per-share results, stats). Shares are seeded by their index, so a redone share reproduces the
        lost one exactly."""
        shares = [s * group_size for s in _shares(n // group_size, len(self.workers))]
        tasks = tuple(int(t) for t in task_ids) if task_ids else None
        jobs = {i: ImagineRequest(s, derive_seed(seed, i), tasks, iteration, versions, parts)
                for i, s in enumerate(shares) if s > 0}
        results: dict[int, ImagineResult] = {}
        t0 = time.perf_counter()
        pending = {}

        def submit(i: int, w: int) -> None:
            pending[self.workers[w].imagine.remote(jobs[i])] = (i, w)

        for i in jobs:
            submit(i, i % len(self.workers))
        redone, hung, failed = 0, 0, {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.call_timeout_s)
            if not ready:  # no share finished in call_timeout_s: the replicas still busy hang
                hung += 1
                if hung > self.max_failures:
                    raise PoolError(f"no world-model share finished within {self.call_timeout_s:g} s, "
                                    f"{hung} times in a row (raise call_timeout_s for a slower model)")
                stuck = dict(pending)
                pending.clear()
                for w in sorted({w for _, w in stuck.values()}):
                    self._replace(w)
                for i, w in stuck.values():
                    submit(i, w)
                    redone += 1
                continue
            i, w = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
                hung = 0
            except ACTOR_ERRORS as exc:
                failed[i] = failed.get(i, 0) + 1
                if failed[i] > self.max_failures:
                    raise PoolError(f"share {i} of the batch killed its replica {failed[i]} times: {exc}") from None
                self._replace(w)
                redone += 1
                submit(i, w)
        stats = {"seconds": time.perf_counter() - t0, "redone_shares": redone, "workers": len(self.workers),
                 "sync_seconds": max(r.sync_seconds for r in results.values())}
        return [results[i] for i in sorted(results)], stats

    def _replace(self, index: int, wait: bool = True) -> None:
        kill_actor(self.workers[index])
        self.workers[index] = self.make_worker()
        self.replaced += 1
        if wait:
            self._ensure_ready(index)

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
