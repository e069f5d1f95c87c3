"""Does more resolution let one frame show success? The policy's observations rendered again at more pixels.

    python benchmarks/reward_resolution.py --store STORE --work DIR [--render 512] [--window 32]
        [--sizes 32 64 128] [--folds 2] [--steps 2000] [--seed 0] [--label state|chunk] [--name reward_resolution]

``reward_ceiling.py`` found that a frame reward reads LIBERO's success from the stored 128-pixel
observations of the policy's rollouts at F1 0.6 at best, with its errors on bowls resting on the plate
about 3 cm from its centre, LIBERO's goal radius, a pixel or two at 128 px. Is that the resolution, or
can the frame not show it at all? Every observation of STORE that follows a chunk is restored in LIBERO
from its recorded simulator state (no stepping) and rendered again at ``--render`` pixels. The head
view's window around the goal's target (``--window`` pixels of a 128-pixel frame: reward_ceiling's crop,
about the plate and its surroundings) is cut at the render's resolution and area-averaged to each of
``--sizes`` pixels; the wrist view is area-averaged to 64 pixels for all. The classifier
(``frame_reward``'s CNN, the same steps and seed for every view) takes both views resized (bilinear)
to the head window's pixels or the wrist's 64, whichever is more, so the views differ only in how many
pixels showed the plate. A ``stored`` view is the stored frame's window, as reward_ceiling's crop saw
it (as many pixels as the smallest rendered size with the default arguments).

Each observation is judged by a model that did not train on its episode: the episodes are split per
task and source into ``--folds`` folds, a model is trained on the others (a seeded share of them picks
the weights and the threshold) and asked about the fold. Labels: LIBERO's goal predicate at the
observation itself (``--label state``: what the frame can show) or the chunk's recorded success (what
the world model's answer learns). Per view: F1, precision, recall and AUC by source, yes answers per goal
state, and each view's F1 on the policy's rollouts paired against the lowest resolution's (a bootstrap
over episodes). Rendering is cached per task in ``--work``: an interrupted run renders only what is
missing. Writes benchmarks/results/NAME.json and .png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import provenance, save_figure, write_result  # noqa: E402
from benchmarks.reward_ceiling import by_state, crop_around, scores  # noqa: E402

WRIST = 64  # pixels of information in the wrist view, every resolution alike
FIELDS = ("head", "wrist", "stored_head", "stored_wrist", "satisfied", "contact", "offset_xy", "height", "lift",
          "success", "episode", "source", "task")


def area(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 averaged over blocks to (N, size, size, 3); S a multiple of ``size``."""
    n, s = frames.shape[:2]
    if s % size:
        raise SystemExit(f"{s} pixels cannot be averaged down to {size}: choose sizes that divide the crop")
    k = s // size
    return frames.reshape(n, size, k, size, k, 3).mean(axis=(2, 4)).round().astype(np.uint8)


def upsample(frames: np.ndarray, size: int) -> np.ndarray:
    """Resized (bilinear) to ``size`` pixels."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1] == size:
        return frames
    x = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear",
                      align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def to_size(frames: np.ndarray, size: int) -> np.ndarray:
    """Averaged down to ``size`` where it divides the frames, else resized (bilinear)."""
    s = frames.shape[1]
    return area(frames, size) if s >= size and s % size == 0 else upsample(frames, size)


def render_task(store_uri: str, suite: str, task: int, episodes: list[str], render: int, window: int) -> dict:
    """Every observation after a chunk of ``episodes`` (one task), restored and rendered at ``render``
    pixels: the head view's target window at that resolution, the wrist view at :data:`WRIST`, the
    stored frames' window and wrist view, the goal state and the chunk's recorded success."""
    from tqdm import tqdm

    from mbpo_ray.config import EnvConfig
    from mbpo_ray.envs.goal_state import goal_of, head_pixels, measure
    from mbpo_ray.envs.libero_env import EnvError, LiberoEnv
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.frame_reward import observation_labels

    store = ReplayStore.open(store_uri)
    stored = store.spec.image_size
    out: dict[str, list] = {k: [] for k in FIELDS}
    with LiberoEnv(EnvConfig(suite=suite, task_id=task, image_size=render)) as env:
        env.reset(0, render=False)
        goal = goal_of(env)
        for eid in tqdm(episodes, desc=f"render {suite}/{task} at {render} px", unit="ep", dynamic_ncols=True):
            ep = load_episodes(store, [eid])
            rows, success = observation_labels(ep)
            states = store.read_episode(eid, ["sim_state"]).column("sim_state").to_pylist()
            if not states or any(not states[r] for r in [0, *rows]):
                raise EnvError(f"episode {eid} lacks recorded simulator states: it cannot be rendered again")
            first = measure(env, states[0], goal).object_z
            heads, centres = [], []
            for r in rows:
                g = measure(env, states[r], goal)
                obs = env.observe()
                heads.append(obs.head)
                out["wrist"].append(to_size(obs.wrist[None], WRIST)[0])
                centres.append(head_pixels(env, g.target_xyz[None], render)[0])
                for k, v in (("satisfied", g.satisfied), ("contact", g.contact), ("offset_xy", g.offset_xy),
                             ("height", g.height), ("lift", g.object_z - first)):
                    out[k].append(v)
            centres = np.array(centres)
            scale = render // stored
            out["head"] += list(crop_around(np.stack(heads), centres, window * scale, window * scale))
            out["stored_head"] += list(crop_around(ep.head[rows], centres / scale, window, window))
            out["stored_wrist"] += list(to_size(ep.wrist[rows], WRIST))
            out["success"] += list(success)
            out["episode"] += [eid] * len(rows)
            out["source"] += [store.episode(eid).source] * len(rows)
            out["task"] += [task] * len(rows)
    return {k: np.array(v) for k, v in out.items()}


def episodes_key(ids: list[str]) -> str:
    """A short name for a set of episodes: a cache made for other episodes is not reused."""
    import hashlib

    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:10]


def rendered(store_uri: str, work: Path, render: int, window: int) -> dict:
    """:func:`render_task` for every task of ``store``, cached in ``work`` (two processes)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from mbpo_ray.replay import ReplayStore

    store = ReplayStore.open(store_uri)
    by_task: dict[tuple[str, int], list[str]] = {}
    for e in store.episodes:
        if e.chunks > 0:
            by_task.setdefault((e.suite, e.task_id), []).append(e.episode_id)
    work.mkdir(parents=True, exist_ok=True)
    files = {key: work / f"{key[0]}_{key[1]}_{render}_{window}_{episodes_key(ids)}.npz" for key, ids in by_task.items()}
    todo = [key for key, f in files.items() if not f.is_file()]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        jobs = {key: pool.submit(render_task, store_uri, *key, by_task[key], render, window) for key in todo}
        for key, job in jobs.items():
            part = job.result()
            np.savez(files[key].with_suffix(".tmp.npz"), **part)
            files[key].with_suffix(".tmp.npz").rename(files[key])
            print(f"rendered {key[0]}/{key[1]}: {len(part['success'])} observations", flush=True)
    parts = [dict(np.load(files[key], allow_pickle=False)) for key in sorted(files)]
    return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}


def folds_of(episode: np.ndarray, group: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per observation: its episode's, episodes dealt round-robin per ``group`` (source and task)
    in a seeded order."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for s in sorted(set(group)):
        eps = sorted(set(episode[group == s]))
        for k, e in enumerate(rng.permutation(eps)):
            fold_of[str(e)] = k % folds
    return np.array([fold_of[str(e)] for e in episode])


def view_frames(data: dict, view: str) -> tuple[np.ndarray, np.ndarray]:
    """(head, wrist) of every observation in ``view`` ('stored', or a number of pixels across the
    target window), both at the head window's pixels or the wrist's, whichever is more."""
    head, wrist = (data["stored_head"], data["stored_wrist"]) if view == "stored" else (area(data["head"], int(view)), data["wrist"])
    size = max(head.shape[1], WRIST)
    return upsample(head, size), upsample(wrist, size)


def cross_validated(head: np.ndarray, wrist: np.ndarray, label: np.ndarray, fold: np.ndarray,
                    episode: np.ndarray, cfg) -> np.ndarray:
    """P(success) of every observation from a frame reward trained on the other folds' episodes (a
    seeded share of them, by episode, picks the weights and the threshold)."""
    from mbpo_ray.world_model.frame_reward import train_frame_reward, training_split

    p = np.zeros(len(label), np.float32)
    for k in sorted(set(fold)):
        fit_ids, val_ids = training_split(sorted(set(episode[fold != k])), cfg)
        fit, val = np.isin(episode, fit_ids), np.isin(episode, val_ids)
        model = train_frame_reward((head[fit], wrist[fit], label[fit]), (head[val], wrist[val], label[val]), cfg)
        p[fold == k] = model.p_success(head[fold == k], wrist[fold == k])
    return p


def paired_f1(p: np.ndarray, q: np.ndarray, truth: np.ndarray, episode: np.ndarray, resamples: int = 2000,
              seed: int = 0) -> dict:
    """F1 of ``q`` minus F1 of ``p`` on the same observations, with a 95% bootstrap over episodes."""
    from mbpo_ray.world_model.evaluate import f1

    ids, inverse = np.unique(episode, return_inverse=True)
    rows = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = np.concatenate([rows[i] for i in rng.integers(0, len(ids), len(ids))])
        diffs.append(f1(q[idx] > 0.5, truth[idx]) - f1(p[idx] > 0.5, truth[idx]))
    return {"f1_difference": round(f1(q > 0.5, truth) - f1(p > 0.5, truth), 4),
            "ci95": [round(float(x), 4) for x in np.percentile(diffs, [2.5, 97.5])], "episodes": len(ids)}


def categories(data: dict) -> np.ndarray:
    from mbpo_ray.envs.goal_state import GoalStates

    n = len(data["satisfied"])
    return GoalStates(satisfied=data["satisfied"], contact=data["contact"], offset_xy=data["offset_xy"],
                      height=data["height"], lift=data["lift"], target_px=np.zeros((n, 2))).category()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a replay store with recorded simulator states")
    ap.add_argument("--work", required=True, help="a folder for the rendered observations (reused when run again)")
    ap.add_argument("--render", type=int, default=512, help="pixels of the new renders (a multiple of the store's)")
    ap.add_argument("--window", type=int, default=32, help="the head view's window around the target, stored pixels")
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128],
                    help="pixels across the window at which the classifier sees it (each divides the render's window)")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", choices=("state", "chunk"), default="state",
                    help="LIBERO's goal predicate at the observation, or the chunk's recorded success")
    ap.add_argument("--name", default="reward_resolution")
    args = ap.parse_args()
    prov = provenance()
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.frame_reward import FrameRewardConfig

    store = ReplayStore.open(os.path.expanduser(args.store))
    scale = args.render // store.spec.image_size
    if args.render % store.spec.image_size or not 4 <= args.window <= store.spec.image_size:
        raise SystemExit(f"--render {args.render} must be a multiple of the store's {store.spec.image_size} pixels "
                         f"and --window {args.window} between 4 and {store.spec.image_size}")
    if args.folds < 2 or any(s < 1 or (args.window * scale) % s for s in args.sizes):
        raise SystemExit(f"--folds must be at least 2 and each of --sizes divide {args.window * scale} (the window rendered)")
    t0 = time.time()
    data = rendered(os.path.expanduser(args.store), Path(os.path.expanduser(args.work)), args.render, args.window)
    render_minutes = round((time.time() - t0) / 60, 1)
    truth = data["satisfied"] if args.label == "state" else data["success"]
    source, episode, state = data["source"], data["episode"], categories(data)
    fold = folds_of(episode, np.char.add(source.astype(str), data["task"].astype(str)), args.folds, args.seed)
    cfg = FrameRewardConfig(steps=args.steps, seed=args.seed)
    views = ["stored", *[str(s) for s in sorted(args.sizes)]]
    out, p = {}, {}
    for view in views:
        head, wrist = view_frames(data, view)
        p[view] = cross_validated(head, wrist, truth, fold, episode, cfg)
        out[view] = {"pixels_across_window": args.window if view == "stored" else int(view),
                     "classifier_input": int(head.shape[1]),
                     "all": scores(p[view], truth),
                     "by_source": {s: scores(p[view][source == s], truth[source == s]) for s in sorted(set(source))},
                     "by_state": by_state(p[view], truth, state, source)}
        print(view, out[view]["by_source"], flush=True)
    low, real = views[1], source == "real"
    result = {"views": out, "label": args.label, "render": args.render, "window_stored_px": args.window,
              "wrist_px": WRIST, "folds": args.folds, "steps": args.steps,
              "observations": int(len(truth)), "episodes": int(len(set(episode))),
              "goal_states": {s: {c: int(((source == s) & (state == c)).sum()) for c in sorted(set(state))}
                              for s in sorted(set(source))},
              "paired_vs_lowest_on_rollouts": {v: paired_f1(p[low][real], p[v][real], truth[real], episode[real])
                                               for v in views if v != low},
              "render_minutes": render_minutes, "seconds": round(time.time() - t0, 1),
              "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, out, p, data, truth)


def plot(name: str, out: dict, p: dict, data: dict, truth: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbpo_ray.envs.goal_state import ONTOP_RADIUS

    views = list(out)
    sources = sorted(out[views[0]]["by_source"])
    fig, axes = plt.subplots(1, 1 + len(views), figsize=(4.2 * (1 + len(views)), 3.6), dpi=110)
    width = 0.8 / len(views)
    for k, view in enumerate(views):
        f = [out[view]["by_source"][s]["f1"] for s in sources]
        axes[0].bar(np.arange(len(sources)) + (k - (len(views) - 1) / 2) * width, f, width,
                    label=f"{view}" if view == "stored" else f"{view} px across the window")
    axes[0].set_xticks(np.arange(len(sources)), [f"{s} ({out[views[0]]['by_source'][s]['positives']} positives)"
                                                 for s in sources], fontsize=7)
    axes[0].set_ylabel("F1, each observation judged out of fold")
    axes[0].set_ylim(0, 1)
    axes[0].axhline(0.9, color="#999999", lw=0.8, ls="--")
    axes[0].legend(fontsize=6)
    axes[0].set_title("Success read from one observation, by resolution", fontsize=8)
    on = (data["source"] == "real") & data["contact"] & (data["height"] >= 0)
    for ax, view in zip(axes[1:], views, strict=True):
        for label, colour in ((False, "#d62728"), (True, "#2ca02c")):
            m = on & (truth == label)
            ax.scatter(100 * data["offset_xy"][m], p[view][m], s=8, alpha=0.6, color=colour,
                       label=f"{'success' if label else 'failure'} ({int(m.sum())})")
        ax.axvline(100 * ONTOP_RADIUS, color="#555555", lw=0.8, ls="--")
        ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
        ax.set_xlim(0, 8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("object's centre from the target's, cm")
        ax.set_title(f"{view}" + ("" if view == "stored" else " px") + ": rollouts, object on the target", fontsize=8)
        ax.legend(fontsize=6)
    axes[1].set_ylabel("P(success)")
    fig.tight_layout()
    save_figure(fig, name)


if __name__ == "__main__":
    main()
