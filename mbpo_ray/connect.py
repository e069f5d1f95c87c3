"""Joining a Ray cluster: the one named by ``RAY_ADDRESS`` (a ``ray job submit`` job sets it), else a
local one on loopback sized to this machine."""

from __future__ import annotations

import os


def use_loopback() -> None:
    """A local one-node Ray on 127.0.0.1: with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` unset, Ray 2.60
    names the node (and binds listeners) by the machine's network address. Ray reads it when it is
    imported, so call this first; Ray's workers inherit it. (A cluster of several nodes must not have
    it at 0: a second node refuses to join.)"""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def local_ray(num_cpus: int) -> None:
    """Start a one-node Ray instance in this process, on loopback."""
    use_loopback()
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)


def connect_ray(num_cpus: int) -> None:
    """The cluster named by ``RAY_ADDRESS``, else a local one (:func:`local_ray`)."""
    if not os.environ.get("RAY_ADDRESS"):
        use_loopback()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        local_ray(num_cpus)


def kill_actor(actor) -> None:
    """``ray.kill``, quietly when the actor is already gone."""
    import contextlib

    import ray

    with contextlib.suppress(Exception):
        ray.kill(actor)
