"""Weight sync: the file weight store against a broadcast over a process group of its own.

    python benchmarks/weight_sync.py [--sizes 7M 100M 1B] [--receivers 2]

A sender actor (the learner's rank 0) holds a float32 state dict of the given size (2048 x 2048
matrices and one remainder, like a transformer's layers) and gets it to ``--receivers`` receiver
actors (world-model replicas) on a local Ray cluster, one run per size:

* ``file``: the sender publishes the version to ``mbpo_ray.weights.WeightStore`` (safetensors file,
  then ``latest.json``), then every receiver loads it (all at once), as the loop does with
  ``mbpo.weight_sync=file``;
* ``broadcast``: the sender's ``learners.weight_channel.WeightChannel`` broadcasts it (gloo on CPU,
  NCCL on GPU) while every receiver receives, as with ``mbpo.weight_sync=broadcast``. Making the group
  (once per set of replicas) is timed apart.

Seconds from the start of the sync until every receiver holds the weights; every receiver's copy is
checked against the sender's. The file store runs on the local disk with a warm page cache (a shared
network folder is slower); both move every byte through the kernel here. Writes
benchmarks/results/weight_sync.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import grouped_bars, write_result  # noqa: E402

SIZES = {"7M": 7_000_000, "100M": 100_000_000, "1B": 1_000_000_000}
SIDE = 2048


class Member:
    """A sender (rank 0) or a receiver of weights, over the file store or a broadcast group."""

    def __init__(self, weights_uri: str, rank: int):
        from mbpo_ray.weights import WeightStore

        self.weights, self.rank = WeightStore(weights_uri), rank
        self.state: dict | None = None
        self.channel = None

    def make(self, params: int, seed: int) -> float:
        import torch

        g = torch.Generator().manual_seed(seed)
        shapes = [(SIDE, SIDE)] * (params // SIDE**2) + ([(params % SIDE**2,)] if params % SIDE**2 else [])
        self.state = {f"layer{i}.weight": torch.randn(s, generator=g) for i, s in enumerate(shapes)}
        return self.checksum()

    def checksum(self) -> float:
        return float(sum(v.double().sum() for v in self.state.values()))

    def drop(self) -> None:
        self.state = None

    def publish(self, version: int) -> None:
        self.weights.publish("policy", self.state, version)

    def load(self, version: int) -> float:
        self.state, _ = self.weights.load("policy", version)
        return self.checksum()

    def open(self, size: int, epoch: int):
        from learners.weight_channel import open_channel

        self._store, addr = open_channel(size, epoch, timeout_s=600.0)
        return addr

    def join(self, addr) -> None:
        from learners.weight_channel import WeightChannel

        self.channel = WeightChannel(addr, self.rank, getattr(self, "_store", None))

    def send(self, version: int) -> None:
        self.channel.send(self.state, version)

    def receive(self, version: int) -> float:
        self.state = self.channel.receive(version)
        return self.checksum()


def one_size(ray, sender, receivers, params: int, version: int) -> dict:
    want = ray.get(sender.make.remote(params, version))
    ray.get([r.drop.remote() for r in receivers])
    t0 = time.perf_counter()
    ray.get(sender.publish.remote(version))
    got = ray.get([r.load.remote(version) for r in receivers])
    file_s = time.perf_counter() - t0
    assert all(abs(g - want) < 1e-6 * max(1.0, abs(want)) for g in got), (got, want)
    ray.get([r.drop.remote() for r in receivers])
    t0 = time.perf_counter()
    sent = sender.send.remote(version + 1000)
    got = ray.get([r.receive.remote(version + 1000) for r in receivers])
    ray.get(sent)
    broadcast_s = time.perf_counter() - t0
    assert all(g == want for g in got), (got, want)
    ray.get([m.drop.remote() for m in (sender, *receivers)])
    return {"file_s": file_s, "broadcast_s": broadcast_s, "speedup": file_s / broadcast_s, "bytes": 4 * params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--receivers", type=int, default=2)
    args = ap.parse_args()
    from mbpo_ray.connect import local_ray

    local_ray(2)
    import ray

    cls = ray.remote(Member).options(num_cpus=0.5)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="weight-sync-") as tmp:
        sender = cls.remote(tmp, 0)
        receivers = [cls.remote(tmp, r + 1) for r in range(args.receivers)]
        t0 = time.perf_counter()
        addr = ray.get(sender.open.remote(args.receivers + 1, 1))
        ray.get([m.join.remote(addr) for m in (sender, *receivers)])
        connect_s = time.perf_counter() - t0
        for k, name in enumerate(args.sizes):
            out[name] = one_size(ray, sender, receivers, SIZES[name], k + 1)
            print(f"{name}: file {out[name]['file_s']:.2f} s, broadcast {out[name]['broadcast_s']:.2f} s "
                  f"({out[name]['speedup']:.1f}x)", flush=True)
    ray.shutdown()
    write_result("weight_sync", {"params": out, "receivers": args.receivers, "dtype": "float32",
                                 "connect_s": connect_s, "transport": "gloo over loopback (CPU)"})
    grouped_bars("weight_sync", list(out), {"file store": ([out[n]["file_s"] for n in out], "#4477aa"),
                                            "broadcast": ([out[n]["broadcast_s"] for n in out], "#ee6677")},
                 "seconds until every receiver holds the weights", f"policy sync to {args.receivers} receivers "
                 "(float32, local Ray, gloo on CPU)", log=True)


if __name__ == "__main__":
    main()
