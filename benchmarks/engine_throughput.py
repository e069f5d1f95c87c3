"""World-model engines side by side: imagined chunk-transitions/s and generated tokens/s, vLLM vs HF.

    python benchmarks/engine_throughput.py [--checkpoint CKPT] [--batches 1 16 64] [--rounds 2]

One transition = the next head view, the next wrist view and the reward after one action chunk
(2K + 3 generated tokens). Both engines serve the same checkpoint; runs alternate between them
so machine drift hits both alike. Without ``--checkpoint`` a checkpoint of the default model size
and CPU token layout is built with random weights: throughput depends on the shapes, not on what the
weights learned (the JSON says which was used).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import grouped_bars, read_result, write_result  # noqa: E402


def random_checkpoint(root: Path):
    from mbpo_ray.config import WorldModelConfig
    from mbpo_ray.envs.libero_env import task_info
    from mbpo_ray.world_model.layout import TokenLayout
    from mbpo_ray.world_model.tokenizer import PRESETS
    from mbpo_ray.world_model.train import build_backbone

    preset = PRESETS["cpu"]
    texts = [task_info("libero_spatial", t)[1] for t in range(10)]
    layout = TokenLayout.fit(texts, np.random.default_rng(0).uniform(-1, 1, (1000, 7)), preset.codebook_size,
                             preset.codes_per_view, chunk_size=10)
    model = build_backbone(WorldModelConfig(), layout)
    model.save_pretrained(root / "model", safe_serialization=True)
    return str(root / "model"), layout, texts, sum(p.numel() for p in model.parameters())


def prompts_for(layout, texts, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    k = layout.codes_per_view
    return [layout.prompt(texts[i % len(texts)], rng.integers(0, layout.codebook_size, k),
                          rng.integers(0, layout.codebook_size, k), rng.uniform(-1, 1, (layout.chunk_size, 7)))
            for i in range(n)]


def measure(engine, layout, texts, batch: int, seed: int) -> float:
    prompts = prompts_for(layout, texts, batch, seed)  # fresh contexts: no prefix-cache hits across runs
    t0 = time.perf_counter()
    out = engine.imagine(prompts, temperature=1.0)  # sampled, as imagination runs in MBPO
    secs = time.perf_counter() - t0
    assert len(out) == batch
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", help="a train-world-model folder (default: random weights, default size)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--name", default="engine_throughput", help="result file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result(args.name), args.name)
    from mbpo_ray.world_model.engines.base import make_engine
    from mbpo_ray.world_model.layout import TokenLayout

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            layout = TokenLayout.load(Path(args.checkpoint) / "layout.json")
            path, texts = str(Path(args.checkpoint) / "model"), list(layout.words[:1]) or ["task"]
            params, weights = None, args.checkpoint
        else:
            path, layout, texts, params = random_checkpoint(Path(tmp))
            weights = "random init (default WorldModelConfig, cpu tokenizer preset)"
        engines = {"vllm": make_engine("vllm", path, layout, max_num_seqs=max(args.batches)),
                   "hf": make_engine("hf", path, layout)}
        for eng in engines.values():  # warm-up: first calls compile / allocate
            measure(eng, layout, texts, 2, seed=0)
        secs = {b: {n: 0.0 for n in engines} for b in args.batches}
        for r in range(args.rounds):
            for b in args.batches:
                for name, eng in engines.items():
                    secs[b][name] += measure(eng, layout, texts, b, seed=1000 * r + b)
        engines["vllm"].close()
    result = {"params": params, "weights": weights, "tokens_per_transition": layout.target_len,
              "prompt_tokens": len(prompts_for(layout, texts, 1, 0)[0]), "rounds": args.rounds}
    for b in args.batches:
        n = b * args.rounds
        v, h = n / secs[b]["vllm"], n / secs[b]["hf"]
        result[f"batch_{b}"] = {"vllm_chunks_per_s": round(v, 2), "hf_chunks_per_s": round(h, 2),
                                "ratio": round(v / h, 2),
                                "vllm_tokens_per_s": round(v * layout.target_len, 1),
                                "hf_tokens_per_s": round(h * layout.target_len, 1)}
    write_result(args.name, result)
    plot(result, args.name)


def plot(r: dict, name: str = "engine_throughput") -> None:
    batches = [k for k in r if k.startswith("batch_")]
    grouped_bars(name, [f"batch {b.split('_')[1]}\n(vLLM {r[b]['ratio']:.1f}x)" for b in batches],
                 {eng: ([r[b][f"{eng}_chunks_per_s"] for b in batches], colour)
                  for eng, colour in (("vllm", "#4477aa"), ("hf", "#cc6677"))},
                 "imagined chunk-transitions / s",
                 f"World-model engines, same checkpoint ({r['tokens_per_transition']} generated tokens per transition)",
                 figsize=(6, 3.6))


if __name__ == "__main__":
    main()
