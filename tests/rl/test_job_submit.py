"""`ray job submit` as a user runs it: a Ray cluster started with `ray start --head` (its own GCS,
dashboard and job server, on loopback), then `cluster/submit.sh` with `configs/smoke.yaml`: two vLLM
world-model workers, two DDP learner ranks and a LIBERO env runner train for two iterations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from mbpo_ray.replay import ReplayStore

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, head: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert head.poll() is None, "ray start --head exited"
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


@pytest.mark.libero
def test_job_submit_runs_training(loop_inputs, tmp_path):
    _, store, policy, wm = loop_inputs
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "sft").symlink_to(policy)
    (shared / "world_model").symlink_to(wm)
    shutil.copytree(store, shared / "replay")  # the job appends its real episodes to its own copy
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # a local cluster without token auth (a cluster of several nodes should keep it on: see cluster/README.md)
    env.update(PATH=f"{venv_bin}:{env['PATH']}", RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    dashboard = _free_port()
    temp = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")  # short: Ray's socket paths are limited in length
    # every port of its own: another Ray instance on this machine (the test session's) holds the defaults,
    # and a job agent that cannot bind its port leaves the job server with "No available agent"
    ports = [f"--{name}={_free_port()}" for name in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    head = subprocess.Popen(
        [str(venv_bin / "ray"), "start", "--head", "--block", *ports,
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--num-cpus=2", "--object-store-memory=300000000", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{dashboard}/api/version", head, 120)
        job = subprocess.run(
            ["bash", "cluster/submit.sh", str(shared), "--env.max_steps=6"], cwd=REPO, capture_output=True,
            text=True, timeout=800,
            env={**env, "RAY_ADDRESS": f"http://127.0.0.1:{dashboard}", "MBPO_CONFIG": "configs/smoke.yaml"})
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        assert "succeeded" in job.stdout
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops this cluster's processes, not others
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    (run,) = (shared / "runs").iterdir()
    logs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2]
    assert all(x["pool/workers"] == 2 and x["learner/rank_divergence"] == 0.0 for x in logs)
    assert "eval/success" in logs[-1] and (run / "checkpoint" / "state.json").is_file()
    real = [e for e in ReplayStore.open(str(shared / "replay")).episodes if e.source == "real"]
    assert len(real) == 2
