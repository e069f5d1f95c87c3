"""Does a larger world model, trained longer, follow the actions? Token-only, so one GPU answers in minutes.

    python benchmarks/wm_scale.py export --world-model CKPT --store STORE --siblings SIB_STORE
        --branches-seed 1 [2 ...] [--exclude-seed 0 [1 ...]] --out DATA.npz
    python benchmarks/wm_scale.py run --data DATA.npz [--sizes base wide large] [--steps 4000] [--minutes 3]
        [--batch 64] [--lr 1e-3] [--eval-every 250] [--seed 0] [--name wm_scale]

``export`` writes everything the question needs as token ids, through CKPT's split, layout and
tokenizer (a few MB, no frames): the transitions of its training and held-out episodes of STORE, and
every pairing of a held-out sibling branch's real first transition with its own and its siblings'
action chunks (``action_likelihood.py``'s pairs, from the sibling collections ``--branches-seed`` of
SIB_STORE). It also scores CKPT itself on them: the reference row, the world model trained here.

``run`` trains a world model of each size from scratch on the training transitions (the training
loss of ``train-world-model``, reward answer weighted 20, AdamW with warm-up and cosine decay over
``--steps``, at most ``--minutes`` per size; bfloat16 autocast on a GPU), keeps the weights with the
lowest held-out loss (checked every ``--eval-every`` steps; the learning rate scaled by 256 / hidden size
above the base width), and reports for each: the held-out and
training cross-entropy per code and answer, and the action gain and pick accuracy on the sibling pairs
(``action_likelihood.scores``). Runs on a GPU when there is one; needs torch, transformers and numpy
only. Writes benchmarks/results/NAME.json and .png (or under MBPO_RESULTS_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.action_likelihood import PARTS, pair_matrix, report, scores, sequence_nll  # noqa: E402
from benchmarks.common import no_home, provenance, save_figure, write_result  # noqa: E402

# name -> (hidden size, layers, heads, MLP size); "base" is the recipe's world model
SIZES = {"tiny": (64, 1, 2, 128), "small": (128, 2, 4, 344), "base": (256, 4, 4, 688),
         "wide": (512, 8, 8, 1376), "large": (768, 12, 12, 2048)}
SETS = ("train", "heldout", "pairs")


def pack(prompts: list, targets: list) -> dict[str, np.ndarray]:
    seqs = [list(p) + list(t) for p, t in zip(prompts, targets, strict=True)]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    return {"tokens": np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]), "prompt_len": np.array([len(p) for p in prompts])}


def unpack(data, name: str) -> tuple[list[list[int]], list[list[int]]]:
    tok, off, plen = data[f"{name}_tokens"], data[f"{name}_offsets"], data[f"{name}_prompt_len"]
    seqs = [tok[off[k]:off[k + 1]].tolist() for k in range(len(plen))]
    return [s[:p] for s, p in zip(seqs, plen, strict=True)], [s[p:] for s, p in zip(seqs, plen, strict=True)]


def per_code(nll: np.ndarray, codes_per_view: int) -> dict[str, float]:
    """Mean cross-entropy per head code, per wrist code and per answer over sequences (N, 3)."""
    return {p: round(float(nll[:, k].mean() / (codes_per_view if p != "reward" else 1)), 4)
            for k, p in enumerate(PARTS)}


def judge(model, layout, sets: dict, pairs: np.ndarray, group: np.ndarray, boot: int, seed: int) -> dict:
    """Held-out and training cross-entropy, and the action gain on the sibling pairs, of one model;
    ``sets``: name -> (prompts, targets) of the training and held-out transitions and the pairs."""
    out = {}
    for name in ("heldout", "train"):
        prompts, targets = sets[name]
        if name == "train":  # a fixed sample is enough to see memorisation
            prompts, targets = prompts[:2000], targets[:2000]
        out[name] = per_code(sequence_nll(model, layout, prompts, targets), layout.codes_per_view)
    nll = pair_matrix(sequence_nll(model, layout, *sets["pairs"]), pairs, len(group))
    out["action"] = report(scores(nll, group), group, layout.codes_per_view, boot, seed)
    return out


def export(args) -> None:
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from benchmarks.action_likelihood import pair_sequences
    from benchmarks.sibling_fidelity import load_siblings
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.layout import TokenLayout
    from mbpo_ray.world_model.tokenizer import ImageTokenizer
    from mbpo_ray.world_model.train import TokenData

    prov, ckpt = provenance(), Path(os.path.expanduser(args.world_model))
    if not (ckpt / "split.json").is_file() or not (ckpt / "layout.json").is_file():
        raise SystemExit(f"--world-model {args.world_model}: no split.json and layout.json there "
                         "(a folder written by `mbpo-ray train-world-model`)")
    if os.path.exists(args.out):
        raise SystemExit(f"--out {args.out} exists: name a new file")
    layout, tok = TokenLayout.load(ckpt / "layout.json"), ImageTokenizer.load(ckpt / "tokenizer")
    split = json.loads((ckpt / "split.json").read_text())
    store = ReplayStore.open(os.path.expanduser(args.store))
    sets = {}
    for name in ("train", "heldout"):
        td = TokenData(load_episodes(store, split[name]), tok, layout)
        sets[name] = td.prompts, td.targets
        print(f"  {name}: {len(td.rows)} transitions of {len(split[name])} episodes", flush=True)
    sb = load_siblings(ReplayStore.open(os.path.expanduser(args.siblings)), args.branches_seed, args.exclude_seed)
    prompts, targets, pairs, _ = pair_sequences(layout, tok, sb)
    sets["pairs"] = prompts, targets
    arrays = {f"{name}_{k}": v for name in SETS for k, v in pack(*sets[name]).items()}
    model = AutoModelForCausalLM.from_pretrained(ckpt / "model").eval()
    meta = {"world_model": no_home(str(ckpt)), "store": no_home(args.store), "siblings": no_home(args.siblings),
            "branches_seed": args.branches_seed, "exclude_seed": args.exclude_seed, "start_states": len(sb.start_ids),
            "transitions": {k: len(sets[k][0]) for k in SETS},
            "params": sum(p.numel() for p in model.parameters()), **prov}
    meta["reference"] = judge(model, layout, sets, pairs, sb.group, args.boot, args.seed)
    np.savez_compressed(args.out, layout=np.array(layout.to_json()), meta=np.array(json.dumps(meta)), pairs=pairs,
                        group=sb.group, **arrays)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in meta["transitions"].items()))


def load_data(path: str):
    """(sets: name -> (prompts, targets), pairs, group, layout, meta) of an ``export`` file, each set
    unpacked once; a clear error when it is not one."""
    from mbpo_ray.world_model.layout import TokenLayout

    try:
        data = dict(np.load(path, allow_pickle=False))
        layout = TokenLayout.from_json(str(data.pop("layout")))
        meta = json.loads(str(data.pop("meta")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--data {path}: not a file written by `wm_scale.py export` ({exc})") from None
    missing = [f"{s}_{k}" for s in SETS for k in ("tokens", "offsets", "prompt_len") if f"{s}_{k}" not in data]
    if missing or "pairs" not in data or "group" not in data:
        raise SystemExit(f"--data {path}: not a file written by `wm_scale.py export` (missing {missing or 'pairs'})")
    return {name: unpack(data, name) for name in SETS}, data["pairs"], data["group"], layout, meta


def train_size(size: str, sets: dict, layout, args, device) -> tuple[object, dict]:
    """A world model of ``size`` trained from scratch on the exported training transitions (``sets`` as
    :func:`load_data` gives them); the weights with the lowest held-out loss, and how the training went."""
    import math

    import torch

    from mbpo_ray.config import WorldModelConfig
    from mbpo_ray.world_model.train import build_backbone, collate, optimizer, segment_losses

    torch.manual_seed(args.seed)
    h, n_layers, heads, ffn = SIZES[size]
    model = build_backbone(WorldModelConfig(hidden_size=h, num_layers=n_layers, num_heads=heads,
                                            intermediate_size=ffn), layout).to(device)
    lr = args.lr * min(1.0, 256 / h)  # wider models take smaller steps
    opt, sched = optimizer(model, lr, min(100, max(1, args.steps // 10)), args.steps)
    prompts, targets = sets["train"]
    held = sets["heldout"]
    rng = np.random.default_rng(args.seed)
    best, best_step, best_state, curve, t0, step = math.inf, 0, None, {}, time.time(), 0

    def heldout_loss() -> float:
        nll = sequence_nll(model.eval(), layout, *held)
        model.train()
        return float((nll[:, 0] + nll[:, 1] + args.reward_weight * nll[:, 2]).mean())

    model.train()
    while step < args.steps and time.time() - t0 < 60 * args.minutes:
        idx = rng.integers(0, len(prompts), args.batch)
        ids, labels, seg = (x.to(device) for x in collate([prompts[i] for i in idx], [targets[i] for i in idx], layout))
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = segment_losses(model, ids, labels, seg, args.reward_weight, layout.sp.pad, 1.0, layout.sp.keep)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % args.eval_every == 0 or step == args.steps or time.time() - t0 >= 60 * args.minutes:
            curve[step] = round(heldout_loss(), 3)
            if curve[step] < best:
                best, best_step = curve[step], step
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            print(f"  {size} step {step}: held-out {curve[step]:.3f} ({time.time() - t0:.0f} s)", flush=True)
    minutes = (time.time() - t0) / 60
    if best_state is not None:
        model.load_state_dict(best_state)
    info = {"params": sum(p.numel() for p in model.parameters()), "shape": dict(zip(("hidden", "layers", "heads", "mlp"),
            SIZES[size], strict=True)), "steps": step, "stopped_by": "steps" if step >= args.steps else "minutes",
            "minutes": round(minutes, 2), "lr": lr, "best_step": best_step, "heldout_loss_by_step": curve,
            "tokens_seen": int(step * args.batch * np.mean([len(p) + len(t) for p, t in zip(prompts, targets,
                                                                                           strict=True)]))}
    return model.eval(), info


def plot(name: str, rows: dict, reference: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    items = list(rows.items()) + ([("reference", reference)] if reference else [])
    for k, view in enumerate(("head", "wrist")):
        x = [r["params"] for _, r in items]
        line = [r["params"] for r in rows.values()]  # the sizes trained here; the reference as a cross
        axes[0].plot(line, [r["heldout"][view] for r in rows.values()], "o-" if k == 0 else "s-", label=f"{view} held out")
        axes[0].plot(line, [r["train"][view] for r in rows.values()], "o:" if k == 0 else "s:", label=f"{view} training")
        if reference:
            axes[0].plot([reference["params"]] * 2, [reference["heldout"][view], reference["train"][view]], "kx")
        gains = [r["action"][view]["gain_nats"] for _, r in items]
        cis = np.array([r["action"][view]["gain_ci95"] for _, r in items]).T
        axes[1].errorbar(np.array(x) * (1.03 if k else 1.0), gains, yerr=[np.subtract(gains, cis[0]),
                         np.subtract(cis[1], gains)], fmt="o" if k == 0 else "s", capsize=3, label=view)
    for (label, r) in items:
        axes[1].annotate(label, (r["params"], r["action"]["views"]["gain_nats"]), fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("cross-entropy per code (nats)")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_ylabel("action gain on held-out siblings (nats)")
    axes[1].set_title("own vs sibling actions: NLL of the real next frame", fontsize=9)
    save_figure(fig, name)


def run(args) -> None:
    import torch

    prov = provenance()
    sets, pairs, group, layout, meta = load_data(args.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = {}
    for size in args.sizes:
        model, info = train_size(size, sets, layout, args, device)
        rows[size] = {**info, **judge(model, layout, sets, pairs, group, args.boot, args.seed)}
        a = rows[size]["action"]
        print(f"{size}: {info['params'] / 1e6:.1f} M params, held-out head / wrist {rows[size]['heldout']['head']} / "
              f"{rows[size]['heldout']['wrist']}, gain head {a['head']['gain_nats']:+.3f} wrist "
              f"{a['wrist']['gain_nats']:+.3f}, pick {a['views']['pick_accuracy']:.3f}", flush=True)
        del model
    ref = meta.get("reference")
    if ref:
        ref = {**ref, "params": meta["params"]}
    result = {"data": {k: v for k, v in meta.items() if k != "reference"}, "reference": ref,
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "settings": {k: getattr(args, k) for k in ("steps", "minutes", "batch", "lr", "eval_every",
                                                         "reward_weight", "seed")},
              "sizes": rows, "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, rows, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    ex = sub.add_parser("export", help="token ids of a world model's data and of held-out sibling pairs")
    ex.add_argument("--world-model", required=True, dest="world_model")
    ex.add_argument("--store", required=True)
    ex.add_argument("--siblings", required=True)
    ex.add_argument("--branches-seed", type=int, nargs="+", required=True, dest="branches_seed")
    ex.add_argument("--exclude-seed", type=int, nargs="+", dest="exclude_seed")
    ex.add_argument("--out", required=True)
    rn = sub.add_parser("run", help="train world models of several sizes on an export and judge them")
    rn.add_argument("--data", required=True)
    rn.add_argument("--sizes", nargs="+", default=["base", "wide", "large"], choices=list(SIZES))
    rn.add_argument("--steps", type=int, default=4000)
    rn.add_argument("--minutes", type=float, default=3.0, help="at most this long per size")
    rn.add_argument("--batch", type=int, default=64)
    rn.add_argument("--lr", type=float, default=1e-3)
    rn.add_argument("--eval-every", type=int, default=250, dest="eval_every")
    rn.add_argument("--reward-weight", type=float, default=20.0, dest="reward_weight")
    rn.add_argument("--name", default="wm_scale")
    for p in (ex, rn):
        p.add_argument("--boot", type=int, default=1000)
        p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.verb == "export" and not args.out.endswith(".npz"):
        ap.error("--out must end in .npz")
    if args.verb == "run" and (args.steps < 1 or args.minutes <= 0 or args.batch < 1 or args.eval_every < 1):
        ap.error("--steps, --minutes, --batch and --eval-every must be positive")
    export(args) if args.verb == "export" else run(args)


if __name__ == "__main__":
    main()
