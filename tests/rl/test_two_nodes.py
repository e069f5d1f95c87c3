"""Two Ray nodes on one machine, each in a network namespace of its own joined by a veth pair: the
learner ranks rendezvous across the nodes (one rank per node), the world-model worker is pinned to
the second node by a custom resource, weights reach it over the broadcast group, and a short
`mbpo-ray train` runs on that cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.rl.netns import NamespacePair, namespaces_unavailable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # token auth off between namespaces this test made (a real cluster keeps it on: cluster/README.md);
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would refuse a second node
    env.update(PATH=f"{BIN}:{env['PATH']}", RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",
               PYTHONPATH=str(REPO))
    return env


def _ray_start(pair: NamespacePair, ns: str, args: list[str], temp: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [*pair.exec(ns), str(BIN / "ray"), "start", "--block", "--num-cpus=2", "--object-store-memory=200000000",
             "--disable-usage-stats", f"--temp-dir={temp}", *args],
            env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to this `ray start --block` stops its node only (`ray stop` would stop every node here)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_nodes(pair: NamespacePair, address: str, n: int, nodes: list[subprocess.Popen]) -> None:
    probe = ("import ray, sys, time\nray.init(address=sys.argv[1], log_to_driver=False)\n"
             "end = time.monotonic() + 120\n"
             "while sum(x['Alive'] for x in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < end:\n"
             "    time.sleep(1)\n"
             "sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= int(sys.argv[2]) else 1)\n")
    end = time.monotonic() + 180
    while True:
        assert all(p.poll() is None for p in nodes), "a `ray start` exited: see ray-a.log / ray-b.log in the test's tmp folder"
        done = subprocess.run([*pair.exec("a"), sys.executable, "-c", probe, address, str(n)], env=_env(),
                              capture_output=True, text=True, timeout=200)
        if done.returncode == 0:
            return
        assert time.monotonic() < end, f"the cluster at {address} did not show {n} nodes: {done.stderr[-2000:]}"
        time.sleep(2)


def test_train_spans_two_nodes(loop_inputs, tmp_path):
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    root, store, policy, wm = loop_inputs
    out = tmp_path / "run"
    with NamespacePair() as pair:
        head_ip, worker_ip = pair.ip("a"), pair.ip("b")
        temps = [tempfile.mkdtemp(prefix=f"ray{k}-", dir="/tmp") for k in "ab"]  # Ray's socket paths are short
        nodes = [_ray_start(pair, "a", ["--head", f"--node-ip-address={head_ip}", "--port=6379",
                                        "--include-dashboard=false"], temps[0], tmp_path / "ray-a.log")]
        try:
            address = f"{head_ip}:6379"
            _wait_nodes(pair, address, 1, nodes)
            nodes.append(_ray_start(pair, "b", [f"--address={address}", f"--node-ip-address={worker_ip}",
                                                '--resources={"wm_node": 2}'], temps[1], tmp_path / "ray-b.log"))
            _wait_nodes(pair, address, 2, nodes)
            train = subprocess.run(
                [*pair.exec("a"), str(BIN / "mbpo-ray"), "train", "--policy", policy, "--world-model", wm,
                 "--store", store, "--out", str(out), "--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.branches=4",
                 "--mbpo.n_chunks=2", "--mbpo.learners=2", "--mbpo.learner_placement=strict_spread",
                 "--mbpo.learner_cpus=0.25", "--mbpo.worker_cpus=0.5", "--mbpo.worker_resources=wm_node:1",
                 "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1", "--mbpo.max_staleness=0",
                 "--mbpo.real_every=0", "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=4",
                 "--mbpo.updates_per_batch=2", "--mbpo.weight_sync=broadcast", "--world_model.engine=vllm"],
                cwd=REPO, env={**_env(), "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=900)
            assert train.returncode == 0, train.stdout[-4000:] + train.stderr[-4000:]
        finally:
            for p in reversed(nodes):
                _stop(p)
            for t in temps:
                subprocess.run(["rm", "-rf", t], check=False)
    placement = json.loads((out / "placement.json").read_text())
    assert sorted(placement["learner_ranks"]) == sorted([head_ip, worker_ip])  # one rank on each node
    assert placement["imagine_nodes"] == [worker_ip]  # the custom resource put the replica on node b
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2] and [x["policy_version"] for x in logs] == [1, 2]
    assert all(x["learner/rank_divergence"] == 0.0 for x in logs)  # the ranks stayed identical
    # every batch was imagined on the newest policy (max_staleness=0: published before it was asked for)
    assert all(x["staleness"] == 0 and x["imagine/chunk_transitions"] > 0 for x in logs)
    assert all(x["placement/learner_nodes"] == 2 and x["placement/imagine_nodes"] == 1 for x in logs)
    # each new version went to the replica over the broadcast group, across the nodes
    assert all(x["sync/policy/broadcast_failures"] == 0 and x["sync/policy/broadcast_s"] > 0 for x in logs)
