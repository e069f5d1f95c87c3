"""Joining a Ray cluster: the one named by ``RAY_ADDRESS`` (a ``ray job submit`` job sets it), else a
local one on loopback sized to this machine."""

from __future__ import annotations

import os


def connect_ray(num_cpus: int) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        # a one-node instance on loopback: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when it is
        # imported (mbpo_ray.cli.main sets it first); its workers inherit it from here
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)


def kill_actor(actor) -> None:
    """``ray.kill``, quietly when the actor is already gone."""
    import contextlib

    import ray

    with contextlib.suppress(Exception):
        ray.kill(actor)
