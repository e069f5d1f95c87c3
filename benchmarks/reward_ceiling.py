"""How well can success be read from a real observation at all, and what does the world model's image
codec cost? (The ceiling of a reward read from imagined frames.)

    python benchmarks/reward_ceiling.py --world-model WM_CKPT --store STORE [--steps 2000] [--seed 0]
        [--name reward_ceiling]

The frame reward (``mbpo_ray.world_model.frame_reward``: a small CNN on the head and wrist views after
a chunk, labelled with that chunk's success) is trained on the world model's training episodes
(``WM_CKPT/split.json``; a seeded share of them picks the weights and the threshold) three times, on
the same rows seen three ways: the stored frames (128 x 128), the same frames area-resized to the
tokenizer's resolution, and the frames encoded and decoded by the world model's tokenizer (what
``train-frame-reward`` trains on and imagination renders at). Each is then asked about the world
model's held-out episodes, split by source (demonstrations, policy rollouts): F1, precision and recall
of ``p_success > 0.5`` (the threshold chosen on validation), and ROC AUC. If the stored frames read
well and the decoded ones do not, the codec is what a reward read from imagined frames cannot get
past; if the stored frames read poorly too, the label itself is hard to see. Writes
benchmarks/results/NAME.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import provenance, save_figure, write_result  # noqa: E402

VIEWS = ("stored", "resized", "decoded")


def views(tokenizer, ep, view: str) -> tuple[np.ndarray, np.ndarray]:
    """(head, wrist) of every row of ``ep`` as the reward would see it in ``view``."""
    from mbpo_ray.world_model.frame_reward import reconstructed
    from mbpo_ray.world_model.tokenizer import resize_frames

    if view == "stored":
        return ep.head, ep.wrist
    if view == "resized":
        size = tokenizer.preset.image_size
        return resize_frames(ep.head, size), resize_frames(ep.wrist, size)
    return reconstructed(tokenizer, ep)


def labelled(tokenizer, ep, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mbpo_ray.world_model.frame_reward import observation_labels

    head, wrist = views(tokenizer, ep, view)
    rows, labels = observation_labels(ep)
    return head[rows], wrist[rows], labels


def scores(p: np.ndarray, truth: np.ndarray) -> dict:
    from mbpo_ray.rl.critic import auc
    from mbpo_ray.world_model.evaluate import f1

    pred = p > 0.5
    tp = int((pred & truth).sum())
    return {"f1": round(f1(pred, truth), 4), "precision": round(tp / max(1, int(pred.sum())), 4),
            "recall": round(tp / max(1, int(truth.sum())), 4), "auc": round(auc(p, truth), 4),
            "positives": int(truth.sum()), "predicted_yes": int(pred.sum()), "observations": int(len(truth))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-model", required=True, dest="world_model", help="a train-world-model checkpoint folder")
    ap.add_argument("--store", required=True, help="the store it was trained on")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="reward_ceiling")
    args = ap.parse_args()
    prov = provenance()  # the commit the run starts from
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.evaluate import check_checkpoint
    from mbpo_ray.world_model.frame_reward import (
        FrameRewardConfig,
        observation_labels,
        train_frame_reward,
        training_split,
    )
    from mbpo_ray.world_model.tokenizer import ImageTokenizer

    t0 = time.time()
    path = check_checkpoint(os.path.expanduser(args.world_model))
    split = json.loads((path / "split.json").read_text())
    if not split["heldout"]:
        raise SystemExit(f"{path} was trained with no held-out episodes (world_model.holdout_episodes=0)")
    store = ReplayStore.open(os.path.expanduser(args.store))
    tokenizer = ImageTokenizer.load(path / "tokenizer")
    cfg = FrameRewardConfig(steps=args.steps, seed=args.seed)
    fit, val, held = (load_episodes(store, x) for x in (*training_split(split["train"], cfg), split["heldout"]))
    source = np.array([store.episode(held.ids[e]).source for e in held.row_episode])
    row_source = source[observation_labels(held)[0]]
    out = {}
    for view in VIEWS:
        model = train_frame_reward(labelled(tokenizer, fit, view), labelled(tokenizer, val, view), cfg)
        h, w, truth = labelled(tokenizer, held, view)
        p = model.p_success(h, w)
        out[view] = {"image_size": int(h.shape[1]), "val_f1": round(model.meta["val_f1"], 4),
                     "all": scores(p, truth),
                     "by_source": {s: scores(p[row_source == s], truth[row_source == s]) for s in sorted(set(row_source))}}
        print(view, json.dumps(out[view]["by_source"]), flush=True)
    result = {"views": out, "heldout_episodes": len(held.ids), "train_episodes": len(fit.ids), "val_episodes": len(val.ids),
              "world_model": path.name, "tokenizer": {"image_size": tokenizer.preset.image_size,
                                                      "codes_per_view": tokenizer.preset.codes_per_view},
              "steps": args.steps, "seconds": round(time.time() - t0, 1), "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, out)


def plot(name: str, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted(next(iter(out.values()))["by_source"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=120)
    width = 0.8 / len(VIEWS)
    for k, view in enumerate(VIEWS):
        f = [out[view]["by_source"][s]["f1"] for s in sources]
        ax.bar(np.arange(len(sources)) + (k - 1) * width, f, width,
               label=f"{view} ({out[view]['image_size']} px)")
    ax.set_xticks(np.arange(len(sources)), [f"{s} (positives: {out['stored']['by_source'][s]['positives']})"
                                            for s in sources])
    ax.set_ylabel("F1 of success, held-out observations")
    ax.set_ylim(0, 1)
    ax.axhline(0.9, color="#999999", lw=0.8, ls="--")
    ax.set_title("Reading success from one real observation, before and after the world model's codec", fontsize=8)
    ax.legend(fontsize=7)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
