"""How well can success be read from a real observation at all, and what does the world model's image
codec cost? (The ceiling of a reward read from imagined frames.)

    python benchmarks/reward_ceiling.py --world-model WM_CKPT --store STORE [--steps 2000] [--seed 0]
        [--views stored resized decoded crop] [--crop 32] [--label chunk|state] [--name reward_ceiling]

The frame reward (``mbpo_ray.world_model.frame_reward``: a small CNN on the head and wrist views after
a chunk, labelled with that chunk's success) is trained on the world model's training episodes
(``WM_CKPT/split.json``; a seeded share of them picks the weights and the threshold) three times, on
the same rows seen three ways: the stored frames (128 x 128), the same frames area-resized to the
tokenizer's resolution, and the frames encoded and decoded by the world model's tokenizer (what
``train-frame-reward`` trains on and imagination renders at); ``crop`` gives the head view more pixels
where the outcome is decided: the stored frame's ``--crop`` pixels around the goal's target (projected
from the observation's restored simulator state), resized to the tokenizer's resolution, with the
wrist view resized too. Each is then asked about the world
model's held-out episodes, split by source (demonstrations, policy rollouts): F1, precision and recall
of ``p_success > 0.5`` (the threshold chosen on validation), and ROC AUC. If the stored frames read
well and the decoded ones do not, the codec is what a reward read from imagined frames cannot get
past; if the stored frames read poorly too, the label itself is hard to see. To see which, every
held-out observation is restored in LIBERO from its recorded simulator state and sorted by where it
stands against the goal (``mbpo_ray.envs.goal_state``: goal, on the target but off centre, lifted,
elsewhere), and each reading's yes answers are counted per state (``by_state``). ``--label state``
trains and judges on LIBERO's goal predicate at the observation instead of the chunk's recorded
success (which a chunk that ran on after success may no longer show). Writes
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

VIEWS = ("stored", "resized", "decoded", "crop")


def crop_around(frames: np.ndarray, centres: np.ndarray, window: int, out: int) -> np.ndarray:
    """A ``window``-pixel square of each frame centred on ``centres[i]`` ((row, column), continuous
    pixel coordinates), edge-padded where it leaves the frame, resized (bilinear) to ``out`` pixels."""
    import torch
    import torch.nn.functional as F

    half = window // 2
    padded = np.pad(frames, ((0, 0), (half, half), (half, half), (0, 0)), mode="edge")
    top_left = np.floor(centres).astype(int)  # the centre's pixel, shifted by the padding, minus half
    crops = np.stack([padded[i, r : r + window, c : c + window] for i, (r, c) in enumerate(top_left)])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(out, out), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


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


def labelled(tokenizer, ep, view: str, goal=None, window: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head, wrist, label) of every observation that follows a chunk. ``crop``: the head view is the
    stored frame's ``window`` pixels around the goal's target (``goal``: those observations' goal
    states), and both views are at the tokenizer's resolution."""
    from mbpo_ray.world_model.frame_reward import observation_labels
    from mbpo_ray.world_model.tokenizer import resize_frames

    head, wrist = views(tokenizer, ep, "stored" if view == "crop" else view)
    rows, labels = observation_labels(ep)
    if view != "crop":
        return head[rows], wrist[rows], labels
    size = tokenizer.preset.image_size
    return crop_around(head[rows], goal.target_px, window, size), resize_frames(wrist[rows], size), labels


def scores(p: np.ndarray, truth: np.ndarray) -> dict:
    from mbpo_ray.rl.critic import auc
    from mbpo_ray.world_model.evaluate import f1

    pred = p > 0.5
    tp = int((pred & truth).sum())
    return {"f1": round(f1(pred, truth), 4), "precision": round(tp / max(1, int(pred.sum())), 4),
            "recall": round(tp / max(1, int(truth.sum())), 4), "auc": round(auc(p, truth), 4),
            "positives": int(truth.sum()), "predicted_yes": int(pred.sum()), "observations": int(len(truth))}


def observation_goal_states(store, held):
    """Goal states (``mbpo_ray.envs.goal_state``) of every observation of ``held`` that follows a chunk."""
    from mbpo_ray.envs.goal_state import goal_states
    from mbpo_ray.world_model.frame_reward import observation_labels

    rows = observation_labels(held)[0]
    first = np.searchsorted(held.row_episode, np.arange(len(held.ids)))
    eps = held.row_episode[rows]
    return goal_states(store, [(held.ids[e], int(r - first[e])) for e, r in zip(eps, rows, strict=True)],
                       image_size=store.spec.image_size)


def by_state(p: np.ndarray, truth: np.ndarray, state: np.ndarray, source: np.ndarray) -> dict:
    """Per source and goal state: observations, recorded successes, and the reward's yes answers."""
    from mbpo_ray.envs.goal_state import CATEGORIES

    return {s: {c: {"observations": int(m.sum()), "successes": int(truth[m].sum()), "predicted_yes": int((p[m] > 0.5).sum())}
                for c in CATEGORIES for m in [(source == s) & (state == c)]}
            for s in sorted(set(source))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-model", required=True, dest="world_model", help="a train-world-model checkpoint folder")
    ap.add_argument("--store", required=True, help="the store it was trained on")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    ap.add_argument("--label", choices=("chunk", "state"), default="chunk",
                    help="success as recorded for the chunk before the observation (what the world model learns), "
                         "or LIBERO's goal predicate at the observation itself")
    ap.add_argument("--crop", type=int, default=32, help="the crop view's window around the target, stored pixels")
    ap.add_argument("--name", default="reward_ceiling")
    args = ap.parse_args()
    prov = provenance()  # the commit the run starts from
    from mbpo_ray.envs.goal_state import ONTOP_RADIUS
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
    if "crop" in args.views and not 4 <= args.crop <= store.spec.image_size:
        raise SystemExit(f"--crop {args.crop}: the window must be 4 to {store.spec.image_size} pixels (the store's frames)")
    tokenizer = ImageTokenizer.load(path / "tokenizer")
    cfg = FrameRewardConfig(steps=args.steps, seed=args.seed)
    fit, val, held = (load_episodes(store, x) for x in (*training_split(split["train"], cfg), split["heldout"]))
    source = np.array([store.episode(held.ids[e]).source for e in held.row_episode])
    row_source = source[observation_labels(held)[0]]
    goal = observation_goal_states(store, held)
    need = args.label == "state" or "crop" in args.views
    states = [observation_goal_states(store, fit), observation_goal_states(store, val), goal] if need else [None] * 3
    state = goal.category()
    out, plotted = {}, {}
    for view in args.views:
        parts = [labelled(tokenizer, ep, view, g, args.crop) for ep, g in zip((fit, val, held), states, strict=True)]
        if args.label == "state":  # LIBERO's goal predicate at the observation itself
            parts = [(h, w, g.satisfied) for (h, w, _), g in zip(parts, states, strict=True)]
        model = train_frame_reward(parts[0], parts[1], cfg)
        h, w, truth = parts[2]
        p = model.p_success(h, w)
        out[view] = {"image_size": int(h.shape[1]), "val_f1": round(model.meta["val_f1"], 4),
                     "all": scores(p, truth),
                     "by_source": {s: scores(p[row_source == s], truth[row_source == s]) for s in sorted(set(row_source))},
                     "by_state": by_state(p, truth, state, row_source)}
        plotted[view] = p
        print(view, json.dumps(out[view]["by_source"]), json.dumps(out[view]["by_state"]), flush=True)
    result = {"views": out, "heldout_episodes": len(held.ids), "train_episodes": len(fit.ids), "val_episodes": len(val.ids),
              "world_model": path.name, "tokenizer": {"image_size": tokenizer.preset.image_size,
                                                      "codes_per_view": tokenizer.preset.codes_per_view},
              "crop_window": args.crop if "crop" in args.views else None,
              "goal_states": {"radius": ONTOP_RADIUS, "by_source": {s: {c: int(((row_source == s) & (state == c)).sum())
                                                                      for c in sorted(set(state))} for s in sorted(set(row_source))}},
              "label": args.label, "steps": args.steps, "seconds": round(time.time() - t0, 1),
              "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, out, plotted, goal, truth, row_source)


def plot(name: str, out: dict, p: dict, goal, truth: np.ndarray, source: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbpo_ray.envs.goal_state import ONTOP_RADIUS

    views = list(out)
    sources = sorted(next(iter(out.values()))["by_source"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    width = 0.8 / len(views)
    for k, view in enumerate(views):
        f = [out[view]["by_source"][s]["f1"] for s in sources]
        ax.bar(np.arange(len(sources)) + (k - (len(views) - 1) / 2) * width, f, width,
               label=f"{view} ({out[view]['image_size']} px)")
    ax.set_xticks(np.arange(len(sources)), [f"{s} (positives: {out[views[0]]['by_source'][s]['positives']})"
                                            for s in sources])
    ax.set_ylabel("F1 of success, held-out observations")
    ax.set_ylim(0, 1)
    ax.axhline(0.9, color="#999999", lw=0.8, ls="--")
    ax.set_title("Reading success from one real observation, before and after the codec", fontsize=8)
    ax.legend(fontsize=7)
    view = views[0]
    on = (source == "real") & goal.contact & (goal.height >= 0)
    for label, colour in ((False, "#d62728"), (True, "#2ca02c")):
        m = on & (truth == label)
        bx.scatter(100 * goal.offset_xy[m], p[view][m], s=9, alpha=0.6, color=colour,
                   label=f"{'success' if label else 'failure'} ({int(m.sum())})")
    bx.axvline(100 * ONTOP_RADIUS, color="#555555", lw=0.8, ls="--")
    bx.axhline(0.5, color="#999999", lw=0.8, ls=":")
    bx.set_xlabel("object's centre from the target's, cm (LIBERO's goal: under 3)")
    bx.set_ylabel(f"P(success), {view} frames")
    bx.set_ylim(-0.02, 1.02)
    bx.set_title("Policy rollouts' observations with the object resting on the target", fontsize=8)
    bx.legend(fontsize=7)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
