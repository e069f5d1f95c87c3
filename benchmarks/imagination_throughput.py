"""Imagination throughput: the UMM world model (vLLM and HF engines) vs a Ctrl-World-style video-diffusion
world model, side by side on this machine in one run.

    python benchmarks/imagination_throughput.py [--batches 1 16 64] [--rounds 2]

One imagined chunk-transition = current head and wrist frames (64 px) + an action chunk of H = 10
actions in, the next head and wrist frames (pixels, what the policy reads) and the reward out. Every
system pays for its whole path: the UMM encodes the current views to codes, generates head codes,
wrist codes and yes/no, and decodes both views; the baseline encodes the views to latents, runs 50
denoising steps over 5 frames of both views, decodes the last frame and runs its reward classifier
(see benchmarks/baselines/ctrl_world.py for its shape). All weights are random (default UMM size,
CPU tokenizer preset): throughput depends on shapes, not on what the weights learned.

Each system lives in its own process (its peak resident memory is its own); the driver alternates
calls between them, batch by batch and round by round, so machine drift hits all alike and only one
system runs at a time. Writes benchmarks/results/imagination_throughput.{json,png}.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import grouped_bars, read_result, write_result  # noqa: E402

SYSTEMS = ("umm_vllm", "umm_hf", "ctrl_world")
LABELS = {"umm_vllm": "UMM, vLLM", "umm_hf": "UMM, HF transformers", "ctrl_world": "Ctrl-World-style diffusion"}


def make_inputs(root: Path) -> int:
    """The random UMM checkpoint (transformer + layout) and the CPU-preset tokenizer every system shares;
    returns the transformer's parameter count."""
    import torch

    from benchmarks.engine_throughput import random_checkpoint
    from mbpo_ray.world_model.tokenizer import PRESETS, ImageTokenizer

    torch.manual_seed(0)
    _, layout, _, params = random_checkpoint(root)
    layout.save(root / "layout.json")
    ImageTokenizer(PRESETS["cpu"]).save(root / "tokenizer")
    return params


def inputs_for(batch: int, seed: int, size: int, chunk: int):
    rng = np.random.default_rng(seed)  # fresh frames per call: no prefix-cache hits across calls
    return (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            rng.uniform(-1, 1, (batch, chunk, 7)).astype(np.float32))


class UMM:
    def __init__(self, root: Path, engine: str, max_batch: int):
        from mbpo_ray.envs.libero_env import task_info
        from mbpo_ray.world_model.engines.base import make_engine
        from mbpo_ray.world_model.layout import TokenLayout
        from mbpo_ray.world_model.tokenizer import ImageTokenizer

        self.layout = TokenLayout.load(root / "layout.json")
        self.tokenizer = ImageTokenizer.load(root / "tokenizer")
        kw = {"max_num_seqs": max_batch} if engine == "vllm" else {}
        self.engine = make_engine(engine, str(root / "model"), self.layout, **kw)
        self.texts = [task_info("libero_spatial", t)[1] for t in range(10)]
        self.params = {"vq_codec": sum(p.numel() for p in self.tokenizer.model.parameters())}

    def step(self, head, wrist, actions, seed: int) -> dict:
        t = [time.perf_counter()]
        hc, wc = self.tokenizer.encode(head), self.tokenizer.encode(wrist)
        t.append(time.perf_counter())
        prompts = [self.layout.prompt(self.texts[i % 10], hc[i], wc[i], actions[i]) for i in range(len(head))]
        out = self.engine.imagine(prompts, temperature=1.0, seed=seed)  # sampled, as in MBPO
        t.append(time.perf_counter())
        self.tokenizer.decode(np.stack([o.head for o in out]))
        self.tokenizer.decode(np.stack([o.wrist for o in out]))
        t.append(time.perf_counter())
        return {"encode": t[1] - t[0], "generate": t[2] - t[1], "decode": t[3] - t[2]}


class CtrlWorld:
    def __init__(self, root: Path, max_batch: int):
        from benchmarks.baselines.ctrl_world import CtrlWorldBaseline
        from mbpo_ray.world_model.tokenizer import ImageTokenizer

        self.model = CtrlWorldBaseline(ImageTokenizer.load(root / "tokenizer"))
        self.params = self.model.parameter_counts()

    def step(self, head, wrist, actions, seed: int) -> dict:
        self.model.imagine(head, wrist, actions, seed=seed)
        return self.model.timings


def serve(system: str, root: str, max_batch: int, conn) -> None:
    """Child process: build one system, then answer (batch, seed) with the phase timings."""
    root = Path(root)
    model = CtrlWorld(root, max_batch) if system == "ctrl_world" else UMM(root, system.split("_")[1], max_batch)
    size = 64
    conn.send(model.params)
    while (msg := conn.recv()) is not None:
        batch, seed = msg
        head, wrist, actions = inputs_for(batch, seed, size, 10)
        t0 = time.perf_counter()
        phases = model.step(head, wrist, actions, seed)
        conn.send({"seconds": time.perf_counter() - t0, **phases})
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # peak RSS, MiB
    if hasattr(model, "engine"):
        model.engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--name", default="imagination_throughput", help="result file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result(args.name), args.name)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        umm_params = make_inputs(Path(tmp))
        procs, conns, params = {}, {}, {}
        for s in SYSTEMS:  # one at a time: engine start-up does not overlap
            conns[s], child = ctx.Pipe()
            procs[s] = ctx.Process(target=serve, args=(s, tmp, max(args.batches), child), daemon=True)
            procs[s].start()
            params[s] = conns[s].recv()
            conns[s].send((2, 0))  # warm-up call: first-call allocation and compilation
            conns[s].recv()
            print(f"{s} ready", flush=True)
        runs = {b: {s: [] for s in SYSTEMS} for b in args.batches}
        for r in range(args.rounds):
            for b in args.batches:
                for s in SYSTEMS:
                    conns[s].send((b, 1000 * r + b))
                    runs[b][s].append(conns[s].recv())
                    print(f"round {r} batch {b} {s}: {runs[b][s][-1]['seconds']:.2f} s", flush=True)
        peak = {}
        for s in SYSTEMS:
            conns[s].send(None)
            peak[s] = round(conns[s].recv(), 1)
            procs[s].join(60)
    result = {"params": {"umm": umm_params, "ctrl_world": params["ctrl_world"]["unet"],
                         "umm_parts": {"transformer": umm_params, **params["umm_vllm"]},
                         "ctrl_world_parts": params["ctrl_world"]},
              "peak_rss_mib": peak, "rounds": args.rounds,
              "setup": "64 px head + wrist, H = 10 actions per chunk; UMM: 131 generated tokens per transition; "
                       "baseline: 5 frames x 2 views per chunk, 50 Euler steps, no CFG, + reward CNN; random weights"}
    for b in args.batches:
        row = {}
        for s in SYSTEMS:
            secs = sum(x["seconds"] for x in runs[b][s])
            row[s] = round(b * args.rounds / secs, 3)
            row[f"{s}_phase_seconds"] = {k: round(float(np.mean([x[k] for x in runs[b][s]])), 4)
                                         for k in runs[b][s][0] if k != "seconds"}
        row["ratio_vllm_vs_ctrl_world"] = round(row["umm_vllm"] / row["ctrl_world"], 2)
        row["ratio_hf_vs_ctrl_world"] = round(row["umm_hf"] / row["ctrl_world"], 2)
        row["ratio_vllm_vs_hf"] = round(row["umm_vllm"] / row["umm_hf"], 2)
        result[f"batch_{b}"] = row
    write_result(args.name, result)
    plot(result, args.name)


def plot(r: dict, name: str = "imagination_throughput") -> None:
    batches = [k for k in r if k.startswith("batch_")]
    colours = {"umm_vllm": "#4477aa", "umm_hf": "#66ccee", "ctrl_world": "#cc6677"}
    grouped_bars(name,
                 [f"batch {b.split('_')[1]}\nvLLM {r[b]['ratio_vllm_vs_ctrl_world']:.1f}x baseline" for b in batches],
                 {LABELS[s]: ([r[b][s] for b in batches], colours[s]) for s in SYSTEMS},
                 "imagined chunk-transitions / s (log)",
                 f"Imagination throughput, same machine, one run (UMM {r['params']['umm'] / 1e6:.2f} M, "
                 f"diffusion UNet {r['params']['ctrl_world'] / 1e6:.2f} M parameters)", log=True)


if __name__ == "__main__":
    main()
