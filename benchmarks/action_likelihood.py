"""Does the world model's belief about the next frame depend on the actions? Read off its likelihoods.

    python benchmarks/action_likelihood.py --store STORE --branches-seed 1 [2 ...] --world-model NAME=WM_CKPT[:last] ...
        [--exclude-seed 0 [...]] [--batch 64] [--boot 1000] [--seed 0] [--name action_likelihood]

Sibling branches (``mbpo-ray branches``) start from one recorded state and differ only in the policy's
sampled actions; LIBERO gave each its own next frames. For every branch i of a group and every action
chunk a_j of that group (its own and its siblings'), each world model scores branch i's real first
transition, teacher-forced: the cross-entropy of i's next head and wrist codes and of its reward
answer, given the shared start and a_j. Per branch and view:

* ``gain``: the mean over siblings j of NLL(x_i | a_j) - NLL(x_i | a_i), in nats per transition (the
  view's codes summed): how much more probable the model finds what LIBERO showed when it is given
  the actions that produced it. 0: the actions make no difference to it; a model that follows them
  gains the more, the more the siblings' real frames differ.
* ``pick_accuracy``: how often a_i, among the group's chunks, gives x_i the lowest NLL (chance: one
  over the group's size): can the model tell which actions led to this frame?

``WM_CKPT:last`` judges a checkpoint's last weights (its resume state, the most fitted to its training
data) instead of the served ones with the lowest held-out loss.

Unlike the PSNR margin of ``sibling_fidelity.py`` nothing is sampled or decoded: every number is an
exact likelihood of the real codes, so small differences between world models show without sampling
noise (about 3.5 min per world model on 7,552 pairs here).
Beside them, the share of next-frame codes that differ between siblings (what a model could use).
Groups as ``sibling_fidelity.py`` forms them; intervals: 95% bootstrap over start states, and each later
model's gain minus the first's on the same branches. Writes benchmarks/results/NAME.json and .png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, no_home, provenance, save_figure, write_result  # noqa: E402
from benchmarks.sibling_fidelity import Siblings, compare, group_mean_ci, load_siblings  # noqa: E402

PARTS = ("head", "wrist", "reward")


def pair_sequences(layout, tok, sb: Siblings) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(prompts, targets, pairs (P, 2), codes): for every (i, j) of one group, branch i's real first
    transition as ``layout`` and the tokenizer ``tok`` write it, with branch j's first action chunk in
    the prompt; and the codes (B, 2, codes_per_view) of each branch's real next head and wrist views."""
    start = {v: tok.encode(sb.start[v]) for v in ("head", "wrist")}
    nxt = {v: tok.encode(sb.real[v][:, 0]) for v in ("head", "wrist")}
    ok = sb.valid[:, 0]
    pairs = np.array([(i, j) for i in np.flatnonzero(ok) for j in np.flatnonzero(ok & (sb.group == sb.group[i]))],
                     dtype=np.int64).reshape(-1, 2)
    prompts = [layout.prompt(sb.instruction[i], start["head"][i], start["wrist"][i], sb.actions[j, 0]) for i, j in pairs]
    targets = [layout.target(nxt["head"][i], nxt["wrist"][i], bool(sb.success[i, 0]), start["head"][i],
                             start["wrist"][i]) for i, _ in pairs]
    b = len(sb.group)
    return prompts, targets, pairs, np.stack([nxt["head"].reshape(b, -1), nxt["wrist"].reshape(b, -1)], 1)


def sequence_nll(model, layout, prompts: list, targets: list, batch: int = 64) -> np.ndarray:
    """(N, 3): each sequence's target cross-entropy summed over the head codes, the wrist codes and the
    answer (nats), teacher-forced as the training loss scores it, on the model's device."""
    import torch

    from mbpo_ray.world_model.train import IGNORE, collate

    device = next(model.parameters()).device
    out = []
    for k in range(0, len(prompts), batch):
        ids, labels, seg = (x.to(device) for x in collate(prompts[k:k + batch], targets[k:k + batch], layout))
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=ids, attention_mask=(ids != layout.sp.pad) | (labels != IGNORE)).logits[:, :-1]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels[:, 1:], ignore_index=IGNORE,
                                               reduction="none")
        out.append(torch.stack([(ce * (seg[:, 1:] == p)).sum(1) for p in range(len(PARTS))], 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(PARTS)))


def pair_matrix(nll: np.ndarray, pairs: np.ndarray, b: int) -> np.ndarray:
    """NLL[i, j, part] from the per-pair rows, NaN for the (i, j) not scored."""
    out = np.full((b, b, len(PARTS)), np.nan)
    out[pairs[:, 0], pairs[:, 1]] = nll
    return out


def checkpoint_weights(spec: str) -> tuple[str, str]:
    """``CKPT`` or ``CKPT:last`` -> (CKPT, "best" | "last"): a checkpoint's served weights, or its last."""
    return (spec[: -len(":last")], "last") if spec.endswith(":last") else (spec, "best")


def pair_nll(ckpt: str, sb: Siblings, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """NLL[i, j, part] (nats, summed over the part's tokens) of branch i's real first transition given
    the start and branch j's first action chunk, for i, j of one group (NaN elsewhere); and the
    codes (B, 2, codes_per_view) of each branch's real next head and wrist views."""
    from pathlib import Path

    from mbpo_ray.world_model.layout import TokenLayout
    from mbpo_ray.world_model.tokenizer import ImageTokenizer
    from mbpo_ray.world_model.train import load_trained

    ckpt, weights = checkpoint_weights(ckpt)
    layout = TokenLayout.load(Path(ckpt) / "layout.json")
    prompts, targets, pairs, codes = pair_sequences(layout, ImageTokenizer.load(Path(ckpt) / "tokenizer"), sb)
    model = load_trained(ckpt, weights).eval()
    nll = sequence_nll(model, layout, prompts, targets, batch)
    return pair_matrix(nll, pairs, len(sb.group)), codes


def scores(nll: np.ndarray, group: np.ndarray) -> dict[str, np.ndarray]:
    """Per branch (B, 1), NaN where not judged: each part's gain, and both views' together; and the
    0/1 pick of the own actions (ties shared) by each part's NLL and by both views'."""
    b = len(group)
    both = nll[..., 0] + nll[..., 1]
    out = {}
    for name, x in [(p, nll[..., k]) for k, p in enumerate(PARTS)] + [("views", both)]:
        gain, pick = np.full((b, 1), np.nan), np.full((b, 1), np.nan)
        for i in range(b):
            row = x[i]
            others = np.flatnonzero(np.isfinite(row) & (np.arange(b) != i))
            if np.isnan(row[i]) or not len(others):
                continue
            gain[i, 0] = row[others].mean() - row[i]
            lowest = row[np.isfinite(row)].min()
            pick[i, 0] = (row[i] == lowest) / np.sum(row[np.isfinite(row)] == lowest)
        out[f"{name}_gain"], out[f"{name}_pick"] = gain, pick
    return out


def differing_codes(codes: np.ndarray, group: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """Mean share of a view's next-frame codes that differ between two siblings' real frames."""
    out = {}
    for k, v in enumerate(("head", "wrist")):
        shares = [np.mean(codes[i, k] != codes[j, k]) for i in np.flatnonzero(ok)
                  for j in np.flatnonzero(ok & (group == group[i])) if j > i]
        out[v] = round(float(np.mean(shares)), 4)
    return out


def report(sc: dict[str, np.ndarray], group: np.ndarray, codes_per_view: int, boot: int, seed: int) -> dict:
    row = {}
    for name in (*PARTS, "views"):
        gain, ci = group_mean_ci(sc[f"{name}_gain"], group, boot, seed)
        pick, pick_ci = group_mean_ci(sc[f"{name}_pick"], group, boot, seed)
        row[name] = {"gain_nats": gain, "gain_ci95": ci, "pick_accuracy": pick, "pick_ci95": pick_ci}
        if name in ("head", "wrist"):
            row[name]["gain_per_code"] = round(gain / codes_per_view, 5)
    return row


def plot(name: str, rows: dict, chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    models, width = list(rows), 0.8 / len(rows)
    for j, m in enumerate(models):
        for ax, key in zip(axes, ("gain", "pick"), strict=True):
            vals = [rows[m][p]["gain_nats" if key == "gain" else "pick_accuracy"] for p in ("head", "wrist", "views")]
            cis = np.array([rows[m][p][f"{key}_ci95"] for p in ("head", "wrist", "views")]).T
            ax.bar(np.arange(3) + j * width, vals, width, label=m,
                   yerr=[np.subtract(vals, cis[0]), np.subtract(cis[1], vals)], capsize=2)
    for ax, ylabel in zip(axes, ("NLL(x | sibling's actions) - NLL(x | own actions) (nats)",
                                 "own actions give the real frame the lowest NLL"), strict=True):
        ax.set_xticks(np.arange(3) + width * (len(models) - 1) / 2, ["head codes", "wrist codes", "both views"])
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7)
    axes[1].axhline(chance, color="grey", lw=0.8, ls="--")
    axes[0].set_title("how much the own actions raise the real next frame's likelihood", fontsize=9)
    axes[1].set_title(f"which of the group's action chunks led here? (dashed: chance {chance:.2f})", fontsize=9)
    save_figure(fig, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--branches-seed", type=int, nargs="+", required=True, dest="branches_seed")
    ap.add_argument("--exclude-seed", type=int, nargs="+", dest="exclude_seed",
                    help="leave out the starts these collections (the training ones) also branched from")
    ap.add_argument("--world-model", nargs="+", required=True, dest="world_model", metavar="NAME=CKPT")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="action_likelihood")
    args = ap.parse_args()
    if any("=" not in x for x in args.world_model):
        ap.error("--world-model takes NAME=CKPT pairs")
    models = {k: os.path.expanduser(v) for k, v in (x.split("=", 1) for x in args.world_model)}
    for k, v in models.items():
        path, weights = checkpoint_weights(v)
        if not os.path.isfile(os.path.join(path, "layout.json")) or not os.path.isdir(os.path.join(path, "model")):
            ap.error(f"--world-model {k}={v}: not a world-model checkpoint (no layout.json and model/ there)")
        if weights == "last" and not os.path.isfile(os.path.join(path, "state", "model.safetensors")):
            ap.error(f"--world-model {k}={v}: no state/model.safetensors there, so no last weights")
    prov = provenance()
    from mbpo_ray.replay import ReplayStore

    t0 = time.time()
    sb = load_siblings(ReplayStore.open(os.path.expanduser(args.store)), args.branches_seed, args.exclude_seed)
    ok = sb.valid[:, 0]
    sizes = np.array([np.sum(ok & (sb.group == sb.group[i])) for i in np.flatnonzero(ok)])
    rows, per_branch, codes = {}, {}, None
    for name, ckpt in models.items():
        t1 = time.time()
        nll, c = pair_nll(ckpt, sb, args.batch)
        codes = c if codes is None else codes  # the siblings' codes through the first model's tokenizer
        sc = scores(nll, sb.group)
        rows[name] = report(sc, sb.group, c.shape[-1], args.boot, args.seed)  # c: (B, 2, codes per view)
        per_branch.update({f"{name}_{k}": v for k, v in sc.items()})
        print(f"  {name}: head gain {rows[name]['head']['gain_nats']:+.3f} nats, wrist "
              f"{rows[name]['wrist']['gain_nats']:+.3f}, pick {rows[name]['views']['pick_accuracy']:.3f} "
              f"({time.time() - t1:.0f} s)", flush=True)
    first = next(iter(models))
    vs_first = {f"{p}_gain": compare({k: per_branch[f"{k}_{p}_gain"] for k in models}, first, sb.group, args.boot,
                                     args.seed) for p in (*PARTS, "views")}
    chance = float(np.mean(1 / sizes))
    excluded = args.exclude_seed[0] if args.exclude_seed and len(args.exclude_seed) == 1 else args.exclude_seed
    result = {"branches_seed": args.branches_seed, "exclude_seed": excluded,
              "start_states": len(sb.start_ids), "branches": int(ok.sum()), "pairs": int(np.sum(sizes)),
              "chance_pick": round(chance, 4), "codes_differing_between_siblings": differing_codes(codes, sb.group, ok),
              "world_models": {k: no_home(v) for k, v in models.items()}, "models": rows, "gain_vs_first": vs_first,
              "seconds": round(time.time() - t0, 1), "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, rows, chance)
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
