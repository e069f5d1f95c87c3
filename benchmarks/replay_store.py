"""Replay store throughput and memory at scale: append, then sample start states.

    python benchmarks/replay_store.py [--transitions 100000] [--image-size 128]

Appends episodes of 12 chunks (+ terminal row) in batches, as env runners do, then samples
start states in a fresh process so its memory reflects reading alone. Frames are random bytes
(an uncompressed store costs the same whatever the pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.common import bar_chart, read_result, write_result  # noqa: E402
from mbpo_ray.config import default_cache_dir  # noqa: E402
from mbpo_ray.envs.libero_env import Observation  # noqa: E402
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec  # noqa: E402

CHUNKS = 12
EPISODES_PER_APPEND = 8


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def episode(spec: StoreSpec, pool: list[np.ndarray], rng: np.random.Generator) -> pa.RecordBatch:
    b = EpisodeBuilder(spec, suite="libero_spatial", task_id=int(rng.integers(10)), instruction="bench",
                       source="demo")
    for c in range(CHUNKS):
        obs = Observation(pool[rng.integers(len(pool))], pool[rng.integers(len(pool))],
                          rng.standard_normal(8).astype(np.float32))
        b.add_chunk(obs, rng.uniform(-1, 1, (spec.chunk_size, 7)), 0.0, c == CHUNKS - 1, c == CHUNKS - 1)
    return b.finish(Observation(pool[0], pool[1], np.zeros(8, np.float32)))


def sample_phase(path: str, batch: int, rounds: int) -> dict:
    """Runs in a fresh process: open the store, sample start states, report speed and memory."""
    t0 = time.perf_counter()
    store = ReplayStore.open(path)
    open_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    store.sample_start_states(batch, rng)
    base_anon, peak_anon = status("RssAnon"), 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        table = store.sample_start_states(batch, rng)
        peak_anon = max(peak_anon, status("RssAnon"))
        del table
    secs = time.perf_counter() - t0
    return {"open_s": open_s, "states_per_s": batch * rounds / secs, "peak_rss": status("VmHWM"),
            "private_growth": peak_anon - base_anon}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transitions", type=int, default=100_000)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--sample-rounds", type=int, default=40)
    ap.add_argument("--dir", default=os.path.join(default_cache_dir(), "bench"))
    ap.add_argument("--_sample", help=argparse.SUPPRESS)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON of the last run")
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result("replay_store"))
    if args._sample:
        print(json.dumps(sample_phase(args._sample, args.sample_batch, args.sample_rounds)))
        return
    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="replay-", dir=args.dir)
    try:
        spec = StoreSpec(image_size=args.image_size)
        store = ReplayStore.create(os.path.join(root, "store"), spec)
        rng = np.random.default_rng(0)
        pool = [rng.integers(0, 256, (spec.image_size,) * 2 + (3,), dtype=np.uint8) for _ in range(64)]
        n_eps = -(-args.transitions // CHUNKS)
        build_s = append_s = 0.0
        from tqdm import tqdm

        for start in tqdm(range(0, n_eps, EPISODES_PER_APPEND), desc="append", unit="batch"):
            t0 = time.perf_counter()
            batches = [episode(spec, pool, rng) for _ in range(min(EPISODES_PER_APPEND, n_eps - start))]
            t1 = time.perf_counter()
            store.append(batches)
            build_s += t1 - t0
            append_s += time.perf_counter() - t1
        info = store.info()
        writer_peak = status("VmHWM")
        out = subprocess.run(
            [sys.executable, __file__, "--_sample", os.path.join(root, "store"),
             "--sample-batch", str(args.sample_batch), "--sample-rounds", str(args.sample_rounds)],
            capture_output=True, text=True, check=True,
        )
        sampled = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "transitions": info["transitions"],
        "rows": info["rows"],
        "episodes": info["episodes"],
        "store_bytes": info["bytes"],
        "image_size": spec.image_size,
        "append_transitions_per_s": round(info["transitions"] / append_s, 1),
        "append_mb_per_s": round(info["bytes"] / append_s / 2**20, 1),
        "build_rows_s": round(build_s, 2),
        "sample_start_states_per_s": round(sampled["states_per_s"], 1),
        "sample_batch": args.sample_batch,
        "open_s": round(sampled["open_s"], 3),
        "peak_rss_mb": round(sampled["peak_rss"] / 2**20, 1),
        "sampler_private_growth_mb": round(sampled["private_growth"] / 2**20, 1),
        "writer_peak_rss_mb": round(writer_peak / 2**20, 1),
        "notes": "peak_rss_mb: the sampling process (open + sample); mapped file pages count in RSS but "
                 "are the OS page cache; sampler_private_growth_mb is private memory added by sampling",
    }
    write_result("replay_store", result)
    plot(result)


def plot(r: dict) -> None:
    bar_chart("replay_store", ["append (transitions/s)", f"sample (start states/s, batch {r['sample_batch']})"],
              [r["append_transitions_per_s"], r["sample_start_states_per_s"]], "per second",
              f"replay store: {r['transitions']:,} transitions, {r['image_size']}px frames, "
              f"{r['store_bytes'] / 2**30:.1f} GiB; sampler peak RSS {r['peak_rss_mb']} MB "
              f"({r['sampler_private_growth_mb']} MB private)")


if __name__ == "__main__":
    main()
