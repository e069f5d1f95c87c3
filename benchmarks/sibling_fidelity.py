"""Does the world model follow the actions that tell sibling branches apart?

    python benchmarks/sibling_fidelity.py --store STORE --branches-seed 1 [2 ...] --world-model NAME=WM_CKPT ...
        [--codec TOKENIZER] [--exclude-seed 0] [--temperature 1.0] [--seed 0] [--boot 1000] [--name sibling_fidelity]

Sibling branches (``mbpo-ray branches``, collection ``--branches-seed``) start from one recorded state
and differ only in the policy's sampled actions; LIBERO gave each its own frames and outcome. Every
world model named imagines every branch open loop from the shared start frames with that branch's
recorded actions, greedily and at ``--temperature``. Per step taken in LIBERO:

* ``own``: PSNR of the imagined view against the branch's own real view; ``sibling``: against its
  siblings' real views at the same step (the mean over siblings); ``margin`` = own - sibling (dB,
  head and wrist): how far the imagined frame follows this branch's actions rather than what any
  branch from that start shows (0: the actions make no difference to the model). Beside them the
  siblings' real views against each other (how different the actions made them) and the copy
  baseline (the start view against the real one).
* the reward answer: pair accuracy and advantage cosine of the imagined returns against the real ones
  within each group (:func:`mbpo_ray.rl.advantage_fidelity.fidelity`), ROC AUC of P(yes) per step
  against real success.

``--codec TOKENIZER`` adds the ceiling: each branch rendered from its real views' own codes, as a
perfect world model with that tokenizer would imagine it (kept patches showing the previous frame's
pixels), so its margin is the most the actions can show through this tokenizer.

Groups whose start state a world model trained on (collection ``--exclude-seed``) are left out; with
several ``--branches-seed`` collections, a start state is judged once, as one group (its first collection's
branches; a collection that drew it twice gives both draws' branches). With
several world models, each later one's margin is compared with the first's on the same (branch,
step), with a 95% bootstrap interval over start states. Writes benchmarks/results/NAME.json, .png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, provenance, save_figure, write_result  # noqa: E402

VIEWS = ("head", "wrist")


@dataclass
class Siblings:
    """Sibling branches of one collection, B branches padded to n steps."""

    group: np.ndarray  # (B,) start state of each branch, 0..G-1
    start_ids: list[str]  # (G,)
    instruction: list[str]  # (B,)
    start: dict[str, np.ndarray]  # view -> (B, S, S, 3) the shared start view
    real: dict[str, np.ndarray]  # view -> (B, n, S, S, 3) the real view after each step
    actions: np.ndarray  # (B, n, H, 7)
    valid: np.ndarray  # (B, n) steps LIBERO ran
    success: np.ndarray  # (B, n) the step that ended in success
    proprio: np.ndarray | None = None  # (B, n + 1, 8) the robot's pose at the start and after each step
    _resized: dict = field(default_factory=dict, repr=False)

    def real_at(self, view: str, size: int) -> np.ndarray:
        """The real views after each step at ``size`` px (what imagined views are compared to), made once."""
        from mbpo_ray.world_model.tokenizer import resize_frames

        if (view, size) not in self._resized:
            b, n = self.valid.shape
            flat = self.real[view].reshape(b * n, *self.real[view].shape[2:])
            self._resized[view, size] = resize_frames(flat, size).reshape(b, n, size, size, 3)
        return self._resized[view, size]


def load_siblings(store, seed: int | list[int], exclude_seed: int | list[int] | None = None) -> Siblings:
    """Every start state of collection ``seed`` (or of each of several, in that order) with at least two
    branches, in store order, as one group (a collection that drew a start twice gives it one group);
    starts collection ``exclude_seed`` (or any of several) also branched from left out, and a start an
    earlier collection of the list already branched from too."""
    from mbpo_ray.replay import frames
    from mbpo_ray.rl.siblings import collection, start_of

    excluded = [] if exclude_seed is None else [exclude_seed] if isinstance(exclude_seed, int) else list(exclude_seed)
    seen = {start_of(e.episode_id) for x in excluded for e in collection(store.episodes, x)}
    groups: dict[str, list] = {}
    for s in [seed] if isinstance(seed, int) else seed:
        mine = [e for e in collection(store.episodes, s) if start_of(e.episode_id) not in seen]
        for e in mine:
            groups.setdefault(start_of(e.episode_id), []).append(e)
        seen |= {start_of(e.episode_id) for e in mine}
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        raise SystemExit(f"no sibling groups of collection seed {seed} in the store"
                         + (f" outside the starts of collection(s) {excluded}" if excluded else "")
                         + ": run `mbpo-ray branches STORE --policy CKPT --seed SEED` first")
    eps = [(g, e) for g, members in enumerate(groups.values()) for e in members]
    n, s, h = max(e.chunks for _, e in eps), store.spec.image_size, store.spec.chunk_size
    b = len(eps)
    out = Siblings(np.array([g for g, _ in eps]), list(groups), [],
                   {v: np.zeros((b, s, s, 3), np.uint8) for v in VIEWS},
                   {v: np.zeros((b, n, s, s, 3), np.uint8) for v in VIEWS}, np.zeros((b, n, h, 7), np.float32),
                   np.zeros((b, n), bool), np.zeros((b, n), bool), np.zeros((b, n + 1, store.spec.proprio_dim), np.float32))
    for i, (_, e) in enumerate(eps):
        t = store.read_episode(e.episode_id, ["head", "wrist", "actions", "success", "instruction", "proprio"])
        k = e.chunks
        for v in VIEWS:
            f = frames(t, v, s)
            out.start[v][i], out.real[v][i, :k] = f[0], f[1:k + 1]
        out.actions[i, :k] = np.stack(t.column("actions").to_pylist()[:k]).reshape(k, h, 7)
        out.valid[i, :k] = True
        out.success[i, :k] = t.column("success").to_pylist()[:k]
        out.proprio[i, :k + 1] = np.stack(t.column("proprio").to_pylist()[:k + 1])
        out.instruction.append(t.column("instruction")[0].as_py())
    return out


def sibling_psnr(im: np.ndarray, real: np.ndarray, group: np.ndarray, valid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(own, sibling) PSNR (B, n), NaN where a step was not run: ``im`` (B, n, S, S, 3) against the
    branch's own ``real`` view, and the mean against its siblings' real views at that step."""
    from mbpo_ray.world_model.tokenizer import psnr

    b, n = valid.shape
    own, sib = np.full((b, n), np.nan), np.full((b, n), np.nan)
    for i in range(b):
        for t in np.flatnonzero(valid[i]):
            own[i, t] = psnr(im[i, t][None], real[i, t][None])[0]
            js = np.flatnonzero((group == group[i]) & valid[:, t] & (np.arange(b) != i))
            if len(js):
                sib[i, t] = psnr(np.repeat(im[i, t][None], len(js), 0), real[js, t]).mean()
    return own, sib


def group_mean_ci(x: np.ndarray, group: np.ndarray, boot: int, seed: int) -> tuple[float, list[float]]:
    """Mean of the finite entries of ``x`` (B, n) and its 95% bootstrap interval over groups."""
    ids = np.unique(group)
    sums = np.array([np.nansum(x[group == g]) for g in ids])
    counts = np.array([np.isfinite(x[group == g]).sum() for g in ids])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), (boot, len(ids)))
    with np.errstate(invalid="ignore"):
        means = sums[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.nanpercentile(means, [2.5, 97.5])
    return round(float(sums.sum() / max(counts.sum(), 1)), 3), [round(float(lo), 3), round(float(hi), 3)]


def view_report(im: np.ndarray, sb: Siblings, view: str, size: int, boot: int, seed: int) -> tuple[dict, np.ndarray]:
    """One view's own / sibling PSNR, margin with its interval, by step; and the margins (B, n)."""
    n = sb.valid.shape[1]
    own, sib = sibling_psnr(im, sb.real_at(view, size), sb.group, sb.valid)
    margin = own - sib
    m, ci = group_mean_ci(margin, sb.group, boot, seed)
    return {"own": round(float(np.nanmean(own)), 3), "sibling": round(float(np.nanmean(sib)), 3), "margin": m,
            "margin_ci95": ci, "margin_by_step": [round(float(np.nanmean(margin[:, t])), 3) for t in range(n)]}, margin


def real_report(sb: Siblings, size: int) -> dict:
    """What the actions did in LIBERO: siblings' real views against each other, and the copy baseline."""
    from mbpo_ray.world_model.tokenizer import psnr, resize_frames

    b, n = sb.valid.shape
    out = {}
    for v in VIEWS:
        real = sb.real_at(v, size)
        _, between = sibling_psnr(real, real, sb.group, sb.valid)
        start = resize_frames(sb.start[v], size)
        copy = np.array([[psnr(start[i][None], real[i, t][None])[0] if sb.valid[i, t] else np.nan for t in range(n)]
                         for i in range(b)])
        out[v] = {"siblings_between": round(float(np.nanmean(between)), 3), "copy": round(float(np.nanmean(copy)), 3)}
    return out


def reward_report(p_yes: np.ndarray, sb: Siblings, gamma: float) -> dict:
    """The answer's ordering of each group's branches (hard and soft returns) and its per-step AUC."""
    from mbpo_ray.rl.advantage_fidelity import fidelity, hard_returns, real_returns, soft_returns
    from mbpo_ray.rl.critic import auc

    p = np.where(sb.valid, p_yes, 0.0)
    real = real_returns(sb.success, gamma)
    return {"hard": fidelity(hard_returns(p, gamma), real, sb.group), "soft": fidelity(soft_returns(p, gamma), real, sb.group),
            "auc": round(auc(p_yes[sb.valid], sb.success[sb.valid]), 4),
            "p_yes_at_success": round(float(p_yes[sb.success].mean()), 4) if sb.success.any() else None,
            "p_yes_elsewhere": round(float(p_yes[sb.valid & ~sb.success].mean()), 4)}


def imagine(path: str, sb: Siblings, temperatures: list[float], seed: int, engine: str = "vllm"):
    """name -> (OpenLoop of every branch) for each temperature; and the tokenizer's image size."""
    from mbpo_ray.rl.advantage_fidelity import OpenLoop, open_loop
    from mbpo_ray.world_model.evaluate import WorldModel

    wm = WorldModel(os.path.expanduser(path), engine)
    out, b = {}, 64
    for temp in temperatures:
        t0 = time.time()
        parts = [open_loop(wm, sb.start["head"][i:i + b], sb.start["wrist"][i:i + b], sb.instruction[i:i + b],
                           sb.actions[i:i + b], temp, seed + i, keep_frames=True) for i in range(0, len(sb.group), b)]
        cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("p_yes", "uncertainty", "head", "wrist")}
        out["greedy" if temp == 0 else f"T{temp:g}"] = OpenLoop(p_yes_frames=None, **cat)
        print(f"  {path}: {len(sb.group)} branches imagined at T={temp:g} in {time.time() - t0:.0f} s", flush=True)
    size = wm.tokenizer.preset.image_size
    del wm
    return out, size


def codec_views(tokenizer_dir: str, sb: Siblings) -> tuple[dict[str, np.ndarray], int]:
    """view -> (B, n, S, S, 3): every branch as a perfect world model with this tokenizer would imagine
    it (the real views' own codes, kept patches showing the previous imagined frame's pixels, as
    ``WorldModel.render`` does with ``keep_pixels``); and the tokenizer's image size. Its margin is the
    most a world model at this resolution can show."""
    from mbpo_ray.world_model.tokenizer import ImageTokenizer, paste_kept, resize_frames

    tok = ImageTokenizer.load(os.path.expanduser(tokenizer_dir))
    size = tok.preset.image_size
    out = {}
    for v in VIEWS:
        real = sb.real_at(v, size)
        cur = resize_frames(sb.start[v], size)
        cur_codes = tok.encode(cur)
        frames = np.zeros_like(real)
        for t in range(real.shape[1]):
            codes = tok.encode(real[:, t])
            cur = frames[:, t] = paste_kept(tok.decode(codes), cur, codes, cur_codes)
            cur_codes = codes
        out[v] = frames
    return out, size


def _codec_run(tokenizer_dir: str, sb: Siblings):
    """:func:`codec_views` as :func:`imagine` returns a model's runs: greedy only, no answer."""
    from mbpo_ray.rl.advantage_fidelity import OpenLoop

    views, size = codec_views(tokenizer_dir, sb)
    return {"greedy": OpenLoop(p_yes=None, p_yes_frames=None, uncertainty=None, **views)}, size


def compare(margins: dict[str, np.ndarray], first: str, group: np.ndarray, boot: int, seed: int) -> dict:
    """Each model's margin minus the first's on the same (branch, step), with its interval."""
    out = {}
    for k, m in margins.items():
        if k != first:
            d, ci = group_mean_ci(m - margins[first], group, boot, seed)
            out[f"{k}_minus_{first}"] = {"difference": d, "ci95": ci}
    return out


def plot(name: str, rows: dict, real: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = [(wm, t) for wm in rows for t in rows[wm]]
    for ax, v in zip(axes, VIEWS, strict=True):
        for wm, t in keys:
            r = rows[wm][t][v]
            ax.plot(range(1, len(r["margin_by_step"]) + 1), r["margin_by_step"], marker="o", label=f"{wm} {t}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("imagined step (chunk)")
        ax.set_ylabel("own - sibling PSNR (dB)")
        ax.set_title(f"{v}: does the imagined frame follow this branch's actions?\n"
                     f"(siblings' real views differ by {real[v]['siblings_between']:.1f} dB PSNR)", fontsize=9)
        ax.legend(fontsize=8)
    save_figure(fig, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--branches-seed", type=int, nargs="+", required=True, dest="branches_seed",
                    help="the `mbpo-ray branches --seed` collection(s) to judge on")
    ap.add_argument("--exclude-seed", type=int, dest="exclude_seed",
                    help="leave out groups from a start state this collection (the training one) also used")
    ap.add_argument("--world-model", nargs="*", default=[], dest="world_model", metavar="NAME=CKPT")
    ap.add_argument("--codec", metavar="TOKENIZER", help="also a row 'codec': the real views' own codes, a "
                    "perfect world model at this tokenizer (greedy only)")
    ap.add_argument("--temperature", type=float, default=1.0, help="besides greedy (0 for greedy only)")
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="sibling_fidelity")
    args = ap.parse_args()
    if not args.world_model and not args.codec:
        ap.error("nothing to judge: name a --world-model or a --codec tokenizer")
    if args.codec and not os.path.isdir(os.path.expanduser(args.codec)):
        ap.error(f"--codec {args.codec}: no such folder (a tokenizer saved by train-world-model, e.g. WM_CKPT/tokenizer)")
    models = dict(x.split("=", 1) if "=" in x else (os.path.basename(os.path.normpath(x)), x) for x in args.world_model)
    prov = provenance()
    from mbpo_ray.replay import ReplayStore

    t0 = time.time()
    sb = load_siblings(ReplayStore.open(os.path.expanduser(args.store)), args.branches_seed, args.exclude_seed)
    temps = [0.0] + ([args.temperature] if args.temperature > 0 else [])
    judged = {name: (lambda p=path: imagine(p, sb, temps, args.seed)) for name, path in models.items()}
    if args.codec:  # the ceiling is judged as one more model that imagined the real codes, greedily, with no answer
        judged["codec"] = lambda: _codec_run(args.codec, sb)
        models["codec"] = args.codec
    rows, margins, real = {}, {}, None
    for name, run in judged.items():
        runs, size = run()
        real = real or real_report(sb, size)
        rows[name] = {}
        for t, ol in runs.items():
            rows[name][t] = {} if ol.p_yes is None else {"reward": reward_report(ol.p_yes, sb, args.gamma)}
            for v in VIEWS:
                rows[name][t][v], margins[f"{name}_{t}_{v}"] = view_report(getattr(ol, v), sb, v, size, args.boot,
                                                                           args.seed)
    first = next(iter(models))
    comparisons = {f"{t}_{v}": compare({k: margins[f"{k}_{t}_{v}"] for k in models if t in rows[k]}, first, sb.group,
                                       args.boot, args.seed) for t in rows[first] for v in VIEWS}
    succ = sb.success.any(1)
    spread = sum(0 < succ[sb.group == g].sum() < (sb.group == g).sum() for g in np.unique(sb.group))
    seeds = args.branches_seed[0] if len(args.branches_seed) == 1 else args.branches_seed
    result = {"branches_seed": seeds, "exclude_seed": args.exclude_seed, "start_states": len(sb.start_ids),
              "branches": int(len(sb.group)), "steps": int(sb.valid.sum()), "n_chunks": int(sb.valid.shape[1]),
              "success_per_branch": round(float(succ.mean()), 4), "groups_with_spread": int(spread),
              "world_models": {k: os.path.basename(os.path.normpath(v)) for k, v in models.items()},
              "real": real, "models": rows, "margin_vs_first": comparisons, "seconds": round(time.time() - t0, 1),
              "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, rows, real)
    for name, by_t in rows.items():
        for t, r in by_t.items():
            answer = (f"; reward AUC {r['reward']['auc']}, pair acc {r['reward']['hard']['pair_accuracy']}"
                      if "reward" in r else "")
            print(f"{name:>10s} {t:>6s}: head margin {r['head']['margin']:+.2f} {r['head']['margin_ci95']}, wrist "
                  f"{r['wrist']['margin']:+.2f} {r['wrist']['margin_ci95']}{answer}")
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
