"""The sharded learner backend against DDP: the same PPO updates, and the memory each rank needs.

    python benchmarks/fsdp.py [--hidden-size 3072] [--updates 3] [--ranks 2]

A policy of about 100 M parameters (the default VLA with a 3,072-wide trunk: its action head alone
is 3,072 x 17,920) is built with random weights; ``--ranks`` learner ranks on a local Ray cluster
(gloo on CPU) run ``--updates`` PPO updates on the same branches (the policy acting on random
frames), once with ``mbpo.learner_backend=ddp`` and once with ``fsdp``. Reported: the largest
difference between the two backends' losses, and the peak resident memory of a rank (its high-water
mark over loading, sharding and the updates). Writes benchmarks/results/fsdp.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import grouped_bars, write_result  # noqa: E402


def make_policy(root: Path, hidden: int) -> tuple[str, int]:
    import numpy as np
    import torch

    from mbpo_ray.config import PolicyConfig
    from mbpo_ray.policy import ActionBins, build_policy, save_policy

    torch.manual_seed(0)
    bins = ActionBins.fit(np.random.default_rng(0).uniform(-1, 1, (1000, 7)), 10)
    policy = build_policy(PolicyConfig(hidden_size=hidden), bins)
    save_policy(policy, root / "policy", {"store_image_size": 64, "demos": {}})
    return str(root / "policy"), sum(p.numel() for p in policy.parameters())


def run(backend: str, policy: str, args, root: Path) -> dict:
    from learners.policy_learner import LearnerGroup
    from mbpo_ray.config import build_config
    from mbpo_ray.mbpo import actor_config
    from mbpo_ray.rl.synthetic import acted_branches

    cfg = build_config(overrides={"mbpo": {"learner_backend": backend, "branches": args.branches,
                                           "minibatch_size": args.branches // args.ranks, "updates_per_batch": 1,
                                           "actor_lr": 1e-4}})
    group = LearnerGroup(actor_config(cfg, policy)[0], policy, str(root / backend), args.ranks, num_cpus=1.0)
    losses, rss, secs = [], 0.0, []
    try:
        for k in range(args.updates):
            br = acted_branches(policy, {1: 0}, b=args.branches, seed=k)
            t0 = time.perf_counter()
            m = group.update(br, k + 1, seed=k)
            secs.append(time.perf_counter() - t0)
            losses.append(m["loss"])
            rss = max(rss, m["peak_rss_mb"])
            print(f"{backend} update {k}: loss {m['loss']:.6f}, peak RSS {m['peak_rss_mb']:.0f} MB, "
                  f"{secs[-1]:.1f} s", flush=True)
    finally:
        group.close()
    return {"losses": losses, "peak_rss_mb": rss, "update_s": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden-size", type=int, default=3072)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--branches", type=int, default=8)
    args = ap.parse_args()
    from mbpo_ray.connect import local_ray

    local_ray(args.ranks)
    import ray

    with tempfile.TemporaryDirectory(prefix="fsdp-") as tmp:
        root = Path(tmp)
        policy, params = make_policy(root, args.hidden_size)
        print(f"policy: {params / 1e6:.1f} M parameters", flush=True)
        out = {b: run(b, policy, args, root) for b in ("ddp", "fsdp")}
    ray.shutdown()
    diff = max(abs(a - b) for a, b in zip(out["ddp"]["losses"], out["fsdp"]["losses"], strict=True))
    write_result("fsdp", {
        "max_loss_diff": diff, "peak_rss_mb": {b: out[b]["peak_rss_mb"] for b in out},
        "params": params, "ranks": args.ranks, "updates": args.updates, "branches": args.branches,
        "losses": {b: out[b]["losses"] for b in out}, "update_s": {b: out[b]["update_s"] for b in out},
        "note": "peak RSS is a rank's high-water mark: loading the whole checkpoint before sharding counts"})
    grouped_bars("fsdp", ["peak RSS per rank (MB)"],
                 {b: ([out[b]["peak_rss_mb"]], c) for b, c in (("ddp", "#4477aa"), ("fsdp", "#ee6677"))},
                 "MB", f"{params / 1e6:.0f} M-parameter policy, {args.ranks} ranks (gloo, CPU)\nmax loss "
                 f"difference {diff:.1e} over {args.updates} updates", figsize=(5.5, 4))


if __name__ == "__main__":
    main()
