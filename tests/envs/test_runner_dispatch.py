"""How episode jobs are handed to env-runner actors: task by task, results in the jobs' order."""

from __future__ import annotations

import ray

from actors.env_runner import run_by_task


@ray.remote(num_cpus=0.1)
class CountingRunner:
    """Stands in for an EnvRunner's job methods: records the order in which it was handed tasks."""

    def __init__(self):
        self.calls = 0

    def policy_branch(self, task_id: int, k: int) -> dict:
        self.calls += 1
        return {"task_id": task_id, "k": k, "call": self.calls}


def test_jobs_run_task_by_task_and_come_back_in_their_order(ray_cluster):
    tasks = [2, 0, 1, 0, 2, 1, 0]
    jobs = [{"task_id": t, "k": k} for k, t in enumerate(tasks)]
    seen = []
    res = run_by_task([CountingRunner.remote()], jobs, method="policy_branch", on_result=lambda r: seen.append(r["k"]))
    assert sorted(seen) == list(range(len(jobs)))  # each result reported once, as it came
    assert [r["k"] for r in res] == list(range(len(jobs))) and [r["job_index"] for r in res] == list(range(len(jobs)))
    by_call = [r["task_id"] for r in sorted(res, key=lambda r: r["call"])]
    assert by_call == sorted(tasks)  # one runner met each task once, in one stretch
