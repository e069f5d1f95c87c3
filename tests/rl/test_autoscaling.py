"""The world-model pool against Ray's own local autoscaling cluster (ray.cluster_utils.AutoscalingCluster,
fake worker nodes of one type with a GPU-like custom resource, min 0, max 2): replicas the pool wants
make the autoscaler launch nodes, the node a shrinking pool leaves idle goes away, and a replica that
needs what no node type has stops with a clear error instead of waiting for ever.

AutoscalingCluster starts and stops with `ray stop --force`, which stops every Ray process it can see:
the check runs in PID, mount and network namespaces of its own (`unshare`, as root), with a private
Ray temp folder, so the test session's cluster is neither seen nor stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mbpo_ray.config import build_config

REPO = Path(__file__).resolve().parents[2]


def _unshare_unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "the `unshare` command (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--net", "true"], capture_output=True,
                           text=True, timeout=30)
    return None if probe.returncode == 0 else f"unshare failed ({probe.stderr.strip()}; it needs root)"


def test_pool_scales_nodes_of_an_autoscaling_cluster(loop_inputs, tmp_path):
    reason = _unshare_unavailable()
    if reason:
        pytest.skip(f"namespaces cannot be made here: {reason}")
    _, store, policy, wm = loop_inputs
    cfg = build_config(overrides=["--world_model.engine=hf", "--mbpo.n_chunks=1"]).to_dict()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")  # fake nodes are nodes: a multi-node cluster
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    script = (f"set -e; ip link set lo up; mkdir -p /tmp/ray; mount -t tmpfs none /tmp/ray; "
              f"exec {sys.executable} -m tests.rl.autoscaling_check \"$@\"")
    run = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--net", "bash", "-c", script, "check",
         json.dumps(cfg), wm, policy, store, str(tmp_path / "weights")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-5000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["start_nodes"] == 0  # min 0: no worker node until a replica asks for one
    assert out["nodes_one_replica"] == 1 and out["grown_to"] == 2 and out["nodes_two_replicas"] == 2
    assert out["branches"] == 4 and out["nodes_that_imagined"] == 2 and out["replica_nodes"] == 2
    assert out["shrunk_to"] == 1 and out["seconds_to_remove_idle_node"] < 180
    assert "tpu_pod" in out["impossible"] and "did not start within 20 s" in out["impossible"]
    assert out["impossible_seconds"] < 120
