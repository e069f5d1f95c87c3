"""Weights pushed over a process group of their own: the learner's rank 0 broadcasts a new policy
version straight into the memory of the replicas, instead of each replica reading it from files.

The group is separate from every default group (the learner ranks' DDP/FSDP group, vLLM's own): a
``ProcessGroupGloo`` (CPU) or ``ProcessGroupNCCL`` (GPU) made from a store that rank 0 opens on its
node (:mod:`learners.rendezvous`), under a prefix per group ``epoch``, so a group made again for a
new set of replicas never meets an old one. Tensors travel flattened into buckets of at most
``BUCKET_BYTES`` per dtype; names, shapes and the version travel through the store. The file weight
store stays what checkpoints and replicas that join late read.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import torch

from learners.rendezvous import interface_for, node_ip, open_store

BUCKET_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ChannelAddress:
    """Where the sender's store listens, how many members the group has, and its epoch."""

    host: str
    port: int
    size: int
    epoch: int
    timeout_s: float = 120.0  # a member that does not answer within this fails the push, not the run

    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.timeout_s)


def open_channel(size: int, epoch: int, timeout_s: float = 120.0):
    """The sender (rank 0): (its store, the address the receivers join with)."""
    store, rdv = open_store(size)
    return store, ChannelAddress(rdv.host, rdv.port, size, epoch, timeout_s)


class WeightChannel:
    """One member of a broadcast group: rank 0 sends state dicts, ranks 1.. receive them."""

    def __init__(self, addr: ChannelAddress, rank: int, store=None):
        import torch.distributed as dist

        timeout = addr.timeout
        if store is None:
            store = dist.TCPStore(addr.host, addr.port, addr.size, False, timeout=timeout)
        self.store = dist.PrefixStore(f"weights/{addr.epoch}/", store)
        self.rank, self.size, self.addr = rank, addr.size, addr
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        if self.device is not None:
            opts = dist.ProcessGroupNCCL.Options()
            self.pg = dist.ProcessGroupNCCL(self.store, rank, addr.size, opts)
        else:
            opts = dist.ProcessGroupGloo._Options()
            opts._devices = [dist.ProcessGroupGloo.create_device(interface=interface_for(node_ip()))]
            opts._timeout = timeout
            self.pg = dist.ProcessGroupGloo(self.store, rank, addr.size, opts)

    def _broadcast(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        dev = t if self.device is None else t.to(self.device)
        self.pg.broadcast([dev], opts).wait()
        return dev if self.device is None else dev.cpu()

    def send(self, state: dict[str, torch.Tensor], version: int) -> None:
        """Rank 0: ``state`` as ``version`` to every receiver (they call :meth:`receive` meanwhile)."""
        meta = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
        self.store.set(f"meta/{version}", json.dumps(meta))
        for bucket in _buckets(meta):
            flat = torch.cat([state[k].detach().reshape(-1).cpu() for k in bucket])
            self._broadcast(flat)

    def receive(self, version: int) -> dict[str, torch.Tensor]:
        """Ranks 1..: the state dict rank 0 sends as ``version``."""
        meta = json.loads(self.store.get(f"meta/{version}"))
        out: dict[str, torch.Tensor] = {}
        shapes = {k: (shape, getattr(torch, dtype)) for k, shape, dtype in meta}
        for bucket in _buckets(meta):
            dtype = shapes[bucket[0]][1]
            numel = [int(torch.Size(shapes[k][0]).numel()) for k in bucket]
            flat = self._broadcast(torch.empty(sum(numel), dtype=dtype))
            for k, piece in zip(bucket, torch.split(flat, numel), strict=True):
                out[k] = piece.view(shapes[k][0])
        return {k: out[k] for k, _, _ in meta}


def _buckets(meta: list) -> list[list[str]]:
    """Consecutive tensors of one dtype, at most ``BUCKET_BYTES`` a bucket (a larger tensor alone)."""
    out: list[list[str]] = []
    size, last = 0, None
    for name, shape, dtype in meta:
        nbytes = int(torch.Size(shape).numel()) * getattr(torch, dtype).itemsize
        if not out or dtype != last or size + nbytes > BUCKET_BYTES:
            out.append([])
            size = 0
        out[-1].append(name)
        size, last = size + nbytes, dtype
    return out


class ChannelSender:
    """What makes an actor the sender of a weight-broadcast group (:class:`WeightBroadcast` calls
    these on its first sender): it opens the group's store on its node and joins as rank 0."""

    def open_channel(self, size: int, epoch: int, timeout_s: float) -> ChannelAddress:
        self._channel_store, addr = open_channel(size, epoch, timeout_s)
        return addr

    def join_channel(self, addr: ChannelAddress) -> None:
        self.channel = WeightChannel(addr, 0, self._channel_store)


class WeightBroadcast:
    """The driver's side of ``mbpo.weight_sync=broadcast`` for one kind of weights (``name``: policy,
    world_model): a group over the sender actors' first and the pool's replicas as they are now
    (made again under a new epoch when the pool replaced, added or removed one), through which every
    new version is pushed. Every sender takes part in a push (learner ranks gather sharded weights),
    the first one sends. A push that fails (a replica died, a member timed out) is dropped and the
    group made again next time: the replicas then read that version from the file store, as a late
    joiner does.

    Senders have ``open_channel(size, epoch, timeout_s)``, ``join_channel(addr)`` and
    ``send_weights(version)``; receivers ``join_channel(addr, rank, name)`` and
    ``receive_weights(name, version)``."""

    def __init__(self, senders: list, name: str, timeout_s: float = 120.0):
        self.senders, self.name, self.timeout_s = senders, name, timeout_s
        self.members: tuple = ()
        self.epoch, self.failures = 0, 0

    def _connect(self, workers: list) -> None:
        import ray

        self.epoch += 1
        first = self.senders[0]
        addr = ray.get(first.open_channel.remote(len(workers) + 1, self.epoch, self.timeout_s))
        ray.get([first.join_channel.remote(addr),
                 *(w.join_channel.remote(addr, i + 1, self.name) for i, w in enumerate(workers))],
                timeout=2 * self.timeout_s)
        self.members = tuple(workers)

    def push(self, workers: list, version: int) -> dict[str, float]:
        """Broadcast ``version`` to ``workers``; the metrics of the push (``sync/NAME/...``)."""
        import time

        import ray

        key = f"sync/{self.name}"
        t0 = time.perf_counter()
        try:
            if tuple(workers) != self.members:
                self._connect(workers)
            sent = [s.send_weights.remote(version) for s in self.senders]
            got = ray.get([w.receive_weights.remote(self.name, version) for w in workers], timeout=2 * self.timeout_s)
            ray.get(sent, timeout=2 * self.timeout_s)
        except Exception as exc:  # noqa: BLE001  the file store still holds the version
            self.failures += 1
            self.members = ()
            print(f"weight broadcast of {self.name} v{version} failed ({type(exc).__name__}); the replicas read it "
                  "from the weight store", flush=True)
            return {f"{key}/broadcast_failures": self.failures}
        return {f"{key}/broadcast_s": time.perf_counter() - t0, f"{key}/receive_s": max(got),
                f"{key}/broadcast_failures": self.failures}
