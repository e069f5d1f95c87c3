"""How the ranks of a process group find each other on a Ray cluster of one or many nodes.

Rank 0 opens the group's TCP store on its own node's address (the one Ray knows the node by), on a
port the operating system picks there, so no port is guessed on another machine; every rank then
joins with that address and names its own network interface (the one that carries its node's
address) to gloo and NCCL, unless the user has named one already. On one machine this is
127.0.0.1 and ``lo``; across nodes each rank uses the interface of its own node.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Rendezvous:
    """Where rank 0's store listens: what the other ranks need to join."""

    host: str
    port: int
    world_size: int


def node_ip() -> str:
    """The address Ray knows this process's node by."""
    import ray

    return ray.util.get_node_ip_address()


def interface_for(ip: str) -> str:
    """The network interface that carries ``ip`` on this machine."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == ip for a in addrs):
            return name
    raise RuntimeError(f"no network interface of this machine has the node address {ip}: set "
                       "GLOO_SOCKET_IFNAME (and NCCL_SOCKET_IFNAME) to the interface the nodes reach each other on")


def open_store(world_size: int):
    """Rank 0: the group's TCP store on this node's address and a port free here; returns
    (store, :class:`Rendezvous`). Keep the store alive until the group has joined."""
    import torch.distributed as dist

    host = node_ip()
    store = dist.TCPStore(host, 0, world_size, True, timeout=TIMEOUT, wait_for_workers=False)
    return store, Rendezvous(host, store.port, world_size)


def join_group(rdv: Rendezvous, rank: int, backend: str, store=None) -> None:
    """``init_process_group`` for ``rank`` through rank 0's store (``store`` on rank 0 itself)."""
    import torch.distributed as dist

    ifname = interface_for(node_ip())
    os.environ.setdefault("GLOO_SOCKET_IFNAME", ifname)
    if backend == "nccl":
        os.environ.setdefault("NCCL_SOCKET_IFNAME", ifname)
    if store is None:
        store = dist.TCPStore(rdv.host, rdv.port, rdv.world_size, False, timeout=TIMEOUT)
    dist.init_process_group(backend, store=store, rank=rank, world_size=rdv.world_size, timeout=TIMEOUT)
