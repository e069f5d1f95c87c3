"""Two `mbpo-ray train` iterations on whatever this machine has (one GPU, or --dry on a CPU), from
inputs made here with random weights: a replay store of random 128 px frames, a VQ tokenizer and a
UMM of the default sizes, and the default VLA. It checks that the loop places, trains and syncs on
the device (vLLM on the GPU, learner ranks in bfloat16 autocast over NCCL, weights broadcast to the
replica), not what it learns.

    python benchmarks/gpu_check_train.py [--dry] [--work DIR]

Writes benchmarks/results/gpu_check_train.json (or MBPO_RESULTS_DIR/gpu_check_train.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write_result  # noqa: E402


def make_inputs(root: Path) -> tuple[str, str, str]:
    """(store, world model, policy) folders with random contents, as the loop reads them."""
    import numpy as np
    import torch

    from mbpo_ray.config import PolicyConfig, WorldModelConfig
    from mbpo_ray.envs.libero_env import task_info
    from mbpo_ray.policy import ActionBins, build_policy, save_policy
    from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
    from mbpo_ray.world_model.layout import TokenLayout
    from mbpo_ray.world_model.tokenizer import PRESETS, ImageTokenizer
    from mbpo_ray.world_model.train import build_backbone

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    spec = StoreSpec(image_size=128, chunk_size=10)
    store = ReplayStore.create(str(root / "store"), spec)
    text = task_info("libero_spatial", 0)[1]
    for _ in range(4):
        b = EpisodeBuilder(spec, suite="libero_spatial", task_id=0, instruction=text, source="demo")
        for c in range(5):
            b.add_chunk(_obs(rng, spec), rng.uniform(-0.5, 0.5, (10, 7)).astype(np.float32), 0.0, False, c == 4,
                        rng.standard_normal(5))
        store.append(b.finish(_obs(rng, spec)))
    preset = PRESETS["cpu"]
    wm = root / "world_model"
    ImageTokenizer(preset).save(wm / "tokenizer")
    layout = TokenLayout.fit([text], rng.uniform(-1, 1, (1000, 7)), preset.codebook_size, preset.codes_per_view,
                             chunk_size=10)
    layout.save(wm / "layout.json")
    build_backbone(WorldModelConfig(), layout).save_pretrained(wm / "model", safe_serialization=True)
    policy = build_policy(PolicyConfig(), ActionBins.fit(rng.uniform(-1, 1, (1000, 7)), 10))
    save_policy(policy, root / "policy", {"store_image_size": 128, "demos": {}})
    return str(root / "store"), str(wm), str(root / "policy")


def _obs(rng, spec):
    from mbpo_ray.envs.libero_env import Observation

    s = spec.image_size
    return Observation(head=rng.integers(0, 256, (s, s, 3), dtype="uint8"),
                       wrist=rng.integers(0, 256, (s, s, 3), dtype="uint8"),
                       proprio=rng.standard_normal(spec.proprio_dim).astype("float32"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="on a CPU: fractional CPUs, gloo, float32")
    ap.add_argument("--work", help="folder for the inputs and the run (default: a temporary one)")
    args = ap.parse_args()
    import torch

    from mbpo_ray.cli import main as cli

    if not args.dry and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --dry on a CPU")
    device = "cpu" if args.dry else torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(args.work or tmp)
        root.mkdir(parents=True, exist_ok=True)
        store, wm, policy = make_inputs(root)
        # one GPU shared: the replica takes 40% of its memory and half of it, each learner rank a quarter
        place = (["--mbpo.worker_cpus=0.5", "--mbpo.learner_cpus=0.25"] if args.dry else
                 ["--mbpo.worker_gpus=0.5", "--mbpo.learner_gpus=0.25", "--mbpo.worker_cpus=1",
                  "--mbpo.learner_cpus=1", "--world_model.gpu_memory_utilization=0.4"])
        flags = ["--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.branches=16", "--mbpo.n_chunks=2",
                 "--mbpo.learners=2", "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1", "--mbpo.real_every=0",
                 "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=8", "--mbpo.updates_per_batch=2",
                 "--mbpo.weight_sync=broadcast", "--world_model.engine=vllm", *place]
        out = root / "run"
        t0 = time.perf_counter()
        code = cli(["train", "--policy", policy, "--world-model", wm, "--store", store, "--out", str(out), *flags])
        seconds = time.perf_counter() - t0
        if code != 0:
            sys.exit(f"mbpo-ray train failed with exit code {code}")
        logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    write_result("gpu_check_train", {"device": device, "dry": args.dry, "seconds": seconds, "flags": flags,
                                     "iterations": logs})
    print(f"2 iterations on {device} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
