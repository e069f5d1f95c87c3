"""How much of a branch's eventual outcome do its first n chunks decide? The ceiling of any critic or
dense reward at the end of a short branch, measured in LIBERO itself.

    python benchmarks/prefix_signal.py --policy SFT_CKPT --store STORE [--tasks 0-3] [--start-states 24]
        [--group-size 8] [--continuations 2] [--n-prefix 2] [--sampler reverse] [--start-window 8]
        [--fail-weight 1] [--workers 2] [--seed 0] [--critic [--critic-trunk STEPS] [--critic-store STORE]]
        [--name prefix_signal]

Two-chunk branches of the SFT policy rarely end differently (``branch_signal.py``: 0 of 24 start
states), so a group-relative update on them can only learn through what is read at the branch's end:
the critic's bootstrap, or a dense reward. Either is only as good as the difference the first n chunks
make to what happens after them. Here every start state (drawn as ``branch_signal.py`` draws them) is
branched ``--group-size`` times in LIBERO by env-runner actors (``EnvRunner.prefix_continuations``):
a sampled prefix of ``--n-prefix`` chunks, then ``--continuations`` independent sampled runs of the
same policy from where that prefix ended, each to success or the start's own episode's time limit.

With two or more continuations per prefix the eventual outcome's variance within a start splits
without bias into the part the prefix decides, the variance over prefixes of P(success | prefix)
(estimated by the covariance of two continuations of the same prefix minus that of two different
prefixes' continuations), and the part decided later. ``decided_share``: the first part over both,
pooled over starts (a bootstrap interval over starts). A critic or a dense reward at the branch's end
can carry at most that share of the signal back. How well do they: the concordance with which the
SFT policy's own value head, with ``--critic`` critics fitted on the real Monte-Carlo returns of
``--critic-store`` (``mbpo_ray.rl.critic``: the value head on the frozen trunk; with
``--critic-trunk`` a whole copy of the policy), and the goal state at the prefix's end
(``mbpo_ray.envs.goal_state``: the object's offset from the target, its height) order two prefixes
of one start whose continuations succeeded at different rates (0.5: chance; a bootstrap interval
over starts). Writes benchmarks/results/NAME.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    add_branch_start_args,
    draw_sim_starts,
    provenance,
    save_figure,
    write_result,
)


def variance_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y`` (S, G, K) eventual outcomes (K >= 2 continuations of each of G prefixes of S starts) ->
    per start (the outcome's variance, the variance over prefixes of P(success | prefix)), both
    unbiased: two continuations of one prefix share its P, two of different prefixes do not, so with
    ``same`` and ``cross`` their mean products, Var(Y) = mean(Y) - cross and Var(P) = same - cross
    (it can come out below 0 by chance; the rest, mean(Y) - same, is what is decided later)."""
    s, g, k = y.shape
    if k < 2 or g < 2:
        raise ValueError(f"need at least 2 prefixes and 2 continuations each, got {g} and {k}")
    y = y.astype(np.float64)
    sums = y.sum(2)  # (S, G)
    same = ((sums**2 - (y**2).sum(2)) / (k * (k - 1))).mean(1)  # mean product of two continuations, one prefix
    tot = sums.sum(1)
    cross = (tot**2 - (sums**2).sum(1)) / (k * k * g * (g - 1))  # ... of two different prefixes
    return y.mean((1, 2)) - cross, same - cross


def concordance_by_start(feature: np.ndarray, p: np.ndarray, keep: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per start: (agreements, pairs) over every pair of its prefixes whose continuations succeeded at
    different rates (``p`` (S, G)), both kept by ``keep`` (S, G; default all): how often ``feature``
    (S, G) orders the pair the same way (ties count half)."""
    hits, pairs = np.zeros(len(p)), np.zeros(len(p), np.int64)
    keep = np.ones(p.shape, bool) if keep is None else keep
    for s, (f, q, k) in enumerate(zip(feature, p, keep, strict=True)):
        i, j = np.triu_indices(len(q), 1)
        m = (q[i] != q[j]) & k[i] & k[j]
        agree = np.sign(f[i] - f[j])[m] * np.sign(q[i] - q[j])[m]
        hits[s], pairs[s] = float((agree > 0).sum() + 0.5 * (agree == 0).sum()), int(m.sum())
    return hits, pairs


def concordance(feature: np.ndarray, p: np.ndarray) -> tuple[int, float]:
    """(pairs, concordance) pooled over starts (:func:`concordance_by_start`); NaN with no pair."""
    hits, pairs = concordance_by_start(feature, p)
    return int(pairs.sum()), float(hits.sum() / pairs.sum()) if pairs.sum() else float("nan")


def summarize(y: np.ndarray, prefix_ok: np.ndarray, features: dict[str, np.ndarray], seed: int) -> dict:
    total, decided = variance_split(y)
    boot = np.random.default_rng(seed).integers(0, len(total), (2000, len(total)))
    share = lambda idx: decided[idx].sum() / max(total[idx].sum(), 1e-12)  # noqa: E731
    p = y.mean(2)
    prefix_k = prefix_ok.sum(1)
    eventual_k = y.reshape(len(y), -1).sum(1)
    out = {"eventual_success": round(float(y.mean()), 4), "prefix_success": round(float(prefix_ok.mean()), 4),
           "starts_prefix_outcomes_differ": int(((prefix_k > 0) & (prefix_k < prefix_ok.shape[1])).sum()),
           "starts_eventual_outcomes_differ": int(((eventual_k > 0) & (eventual_k < y[0].size)).sum()),
           "total_variance": round(float(total.mean()), 4), "decided_variance": round(float(decided.mean()), 4),
           "decided_share": round(float(share(np.arange(len(total)))), 4),
           "decided_share_ci95": [round(float(x), 4) for x in np.percentile([share(b) for b in boot], [2.5, 97.5])],
           "per_start": {"total_variance": np.round(total, 4).tolist(), "decided_variance": np.round(decided, 4).tolist()},
           "concordance": {}}
    for name, f in features.items():
        out["concordance"][name] = _concordance_summary(f, p, None, boot)
        # pairs where neither prefix has succeeded yet: what only a bootstrap can order
        out.setdefault("concordance_unfinished", {})[name] = _concordance_summary(f, p, ~prefix_ok, boot)
    out["features"] = {name: np.round(f, 4).tolist() for name, f in features.items()}
    return out


def _concordance_summary(f: np.ndarray, p: np.ndarray, keep: np.ndarray | None, boot: np.ndarray) -> dict:
    hits, pairs = concordance_by_start(f, p, keep)
    ok = [b for b in boot if pairs[b].sum()]
    return {"pairs": int(pairs.sum()), "starts": int((pairs > 0).sum()),
            "concordance": round(float(hits.sum() / pairs.sum()), 4) if pairs.sum() else None,
            "ci95": [round(float(x), 4) for x in np.percentile([hits[b].sum() / pairs[b].sum() for b in ok], [2.5, 97.5])]
            if ok else None}


def prefix_end_features(args, res: list[dict], prefix_ok: np.ndarray, gamma: float) -> dict[str, np.ndarray]:
    """What a bootstrap or a dense reward could read at each prefix's end, (S, G) each: the SFT
    policy's own value head, with ``--critic`` critics fitted on real returns (a prefix that succeeded
    needs no bootstrap: its return, 1, stands in), and the goal state's object offset and height."""
    shape = prefix_ok.shape
    critics = {"SFT critic (never fitted)": np.array([r["value"] for r in res]).reshape(shape)}
    if args.critic:
        critics.update(fitted_critics(args, res, gamma, shape))
    for v in critics.values():
        v[prefix_ok] = 1.0
    return {**critics, "object near the target": -np.array([r["goal"].offset_xy for r in res]).reshape(shape),
            "object's height": np.array([r["goal"].object_z for r in res]).reshape(shape)}


def fitted_critics(args, res: list[dict], gamma: float, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """V(the prefix's last observation), (S, G), per critic fitted on the real Monte-Carlo returns of
    ``--critic-store``: the policy's value head on its frozen trunk, and with ``--critic-trunk`` a copy
    of the whole policy (``mbpo_ray.rl.critic``)."""
    from mbpo_ray.config import parse_task_ids
    from mbpo_ray.policy import Observations, load_policy
    from mbpo_ray.rl.critic import fitted_critic_values, real_returns

    policy = load_policy(args.policy).eval()
    rr = real_returns(os.path.expanduser(args.critic_store or args.store), gamma, parse_task_ids(args.tasks),
                      max_rows=10**7, seed=args.seed)
    obs = Observations(np.stack([r["final_head"] for r in res]), np.stack([r["final_wrist"] for r in res]),
                       np.zeros((len(res), 8), np.float32), [r["instruction"] for r in res])
    names = {"value_head": "value head fitted on real returns", "whole_policy": "whole-policy critic fitted on them"}
    return {names[k]: v[0].reshape(shape) for k, v in fitted_critic_values(policy, rr, [obs], args.critic_trunk,
                                                                          args.seed).items()}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_branch_start_args(ap, start_states=24)
    ap.add_argument("--continuations", type=int, default=2)
    ap.add_argument("--n-prefix", type=int, default=2, dest="n_prefix")
    ap.add_argument("--critic", action="store_true",
                    help="also order the prefixes by a value head fitted on real Monte-Carlo returns (frozen trunk)")
    ap.add_argument("--critic-trunk", type=int, default=0, dest="critic_trunk", metavar="STEPS",
                    help="with --critic: also by a copy of the whole policy fitted on them for STEPS steps")
    ap.add_argument("--critic-store", dest="critic_store", help="the store whose returns fit the critics (default --store)")
    ap.add_argument("--name", default="prefix_signal")
    ap.add_argument("--plot-only", action="store_true", dest="plot_only", help="redraw NAME's PNG from its JSON")
    return ap


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plot-only", action="store_true", dest="plot_only")
    pre.add_argument("--name", default="prefix_signal")
    only, _ = pre.parse_known_args()
    if only.plot_only:  # redraw the PNG from the JSON
        plot(json.loads((RESULTS / f"{only.name}.json").read_text()), only.name)
        return
    args = parser().parse_args()
    args.policy = os.path.expanduser(args.policy)
    if args.continuations < 2 or args.group_size < 2:
        raise SystemExit("--continuations and --group-size must be at least 2 (the variance split needs pairs)")
    from tqdm import tqdm

    from actors.env_runner import make_env_runners, run_by_task
    from mbpo_ray.config import build_config
    from mbpo_ray.connect import connect_ray, kill_actor
    from mbpo_ray.mbpo import actor_config
    from mbpo_ray.replay.samplers import chunks_to_go
    from mbpo_ray.seeds import derive_seed

    prov = provenance()
    cfg = build_config()
    horizon_chunks = cfg.env.horizon // cfg.env.chunk_size
    store, ep, chunk, _, sims = draw_sim_starts(args)
    eps = [store.episodes[int(e)] for e in ep]
    jobs = [{"checkpoint": args.policy, "suite": e.suite, "task_id": e.task_id, "sim_state": s,
             "n_prefix": args.n_prefix, "continuations": args.continuations,
             "budget_chunks": max(1, horizon_chunks - int(c)), "seed": derive_seed(args.seed, i, g) % 2**31}
            for i, (e, s, c) in enumerate(zip(eps, sims, chunk, strict=True)) for g in range(args.group_size)]
    connect_ray(args.workers)
    runners = make_env_runners(actor_config(cfg, args.policy)[0], None, args.workers)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="prefixes and their continuations", unit="prefix", dynamic_ncols=True)
    try:
        res = run_by_task(runners, jobs, None, "prefix_continuations", on_result=lambda r: bar.update())
    finally:
        bar.close()
        for r in runners:
            kill_actor(r)
    shape = (len(eps), args.group_size)
    y = np.array([r["eventual"] for r in res], bool).reshape(*shape, args.continuations)
    prefix_ok = np.array([r["prefix_success"] for r in res]).reshape(shape)
    features = prefix_end_features(args, res, prefix_ok, cfg.mbpo.gamma)
    result = {"start_states": len(eps), "group_size": args.group_size, "continuations": args.continuations,
              "n_prefix": args.n_prefix, "tasks": args.tasks, "sampler": args.sampler, "start_window": args.start_window,
              "fail_weight": args.fail_weight, "seed": args.seed, "horizon_chunks": horizon_chunks,
              "chunks_to_go": chunks_to_go(store.episodes, ep, chunk).tolist(),
              "start_chunk": [int(c) for c in chunk], "start_episode_succeeded": [bool(e.success) for e in eps],
              "env_steps": int(sum(r["steps"] for r in res)), "seconds": round(time.perf_counter() - t0, 1),
              **summarize(y, prefix_ok, features, args.seed), "eventual": y.astype(int).tolist(),
              "prefix_outcomes": prefix_ok.astype(int).tolist()}
    write_result(args.name, result, prov)
    print(f"decided share {result['decided_share']} {result['decided_share_ci95']}; starts whose prefixes end "
          f"differently {result['starts_prefix_outcomes_differ']}, eventually {result['starts_eventual_outcomes_differ']} "
          f"of {len(eps)}; concordance {result['concordance']}", flush=True)
    plot(result, args.name)


def plot(r: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    order = np.argsort(r["chunks_to_go"], kind="stable")
    x = np.arange(len(order))
    tot, dec = (np.array(r["per_start"][k])[order] for k in ("total_variance", "decided_variance"))
    a.bar(x - 0.2, tot, 0.4, label="eventual outcome's variance")
    a.bar(x + 0.2, dec, 0.4, label=f"decided by the first {r['n_prefix']} chunks")
    a.set_xticks(x, [str(r["chunks_to_go"][i]) for i in order], fontsize=6 if len(x) <= 30 else 4)
    a.set_xlabel("start state (chunks to the end of its recorded episode)")
    a.set_ylabel("variance within the start's branches")
    lo, hi = r["decided_share_ci95"]
    a.set_title(f"decided share {r['decided_share']:.2f} [{lo:.2f}, {hi:.2f}]; {r['group_size']} prefixes x "
                f"{r['continuations']} continuations", fontsize=8)
    a.legend(fontsize=7)
    names = list(r["concordance"])
    y = np.arange(len(names))[::-1]
    c = np.array([r["concordance"][n]["concordance"] for n in names], float)  # None (no pair): NaN
    ci = np.array([r["concordance"][n].get("ci95") or [np.nan, np.nan] for n in names], float)
    b.barh(y, c, color="#7f7f7f", xerr=np.abs(ci.T - c), capsize=3, error_kw={"lw": 0.8})
    b.axvline(0.5, color="#d62728", lw=0.8, ls="--")
    b.set_yticks(y, [f"{n} ({r['concordance'][n]['pairs']} pairs)" for n in names], fontsize=7)
    b.set_xlim(0, 1)
    b.set_xlabel("pairs ordered as their continuations (95% CI over starts)")
    b.set_title("what the end of a prefix shows of what follows (0.5: chance)", fontsize=8)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
