"""Can the critic tell from one observation whether the policy will succeed from there?

    python benchmarks/critic_fidelity.py --policy SFT_CKPT --store STORE [--tasks 0-3] [--heldout 0.33]
        [--steps 3000] [--gamma 0.99] [--seed 0] [--train-rollouts 20 40 80 ...] [--end-to-end 2000]
        [--name critic_fidelity]

PPO bootstraps every imagined branch with the critic's V(last observation), and only that bootstrap
can carry a signal from start states more than ``n`` chunks before the outcome. The critic (a copy of
the policy's value head on its frozen trunk features, the part ``mbpo.critic_fit_steps`` trains) is
fitted here with Adam on the discounted Monte-Carlo returns of the store's real episodes: the
demonstrations and a share of the policy rollouts (failures included), keeping the weights with the
lowest error on a fifth of those episodes set aside (early stopping); a second fit sees the
demonstrations alone. Both are then
asked about the held-out policy rollouts: how well V(s) at a chunk boundary ranks states of episodes
that went on to succeed above states of episodes that failed (ROC AUC; 0.5 = no better than a coin),
per bucket of the boundary's chunk index (failures run longer, so time alone must not do the
ranking), with bootstrap intervals over held-out episodes. ``--train-rollouts N ...`` adds a learning
curve: one more fit per N on the demonstrations and N of the training rollouts (nested draws, the same
validation and held-out episodes), to ask whether more on-policy episodes make a better critic.
``--end-to-end STEPS`` adds a fit of a copy of the whole policy (trunk and value head, Adam at 1e-4,
minibatches of 32) on the same rows and returns, early-stopped on the same validation rows: whether
features trained for value rank the held-out states better than the SFT trunk's frozen ones.
Writes benchmarks/results/NAME.json, .png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import save_figure, write_result  # noqa: E402

BUCKETS = ((0, 3), (4, 7), (8, 11), (12, 15), (16, 10**9))  # chunk index since the episode's start


def bucket_label(lo: int, hi: int) -> str:
    return f"chunks {lo}-{hi}" if hi < 10**9 else f"chunks {lo}+"


def split(rr, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Row masks (train: demos + the other rollouts; validation: a fifth of the training episodes, for
    early stopping; held out: ``frac`` of the rollout episodes) and the held-out episode ids."""
    rollouts = sorted({e for e, s in zip(rr.episode, rr.source, strict=True) if s == "real"})
    if len(rollouts) < 4:
        raise SystemExit(f"the store holds {len(rollouts)} policy rollouts of these tasks; write some with "
                         "`mbpo-ray eval POLICY --sample --to-store STORE`")
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(rollouts, size=max(2, int(round(frac * len(rollouts)))), replace=False).tolist())
    is_held = np.isin(np.asarray(rr.episode), held)
    rest = sorted(set(rr.episode) - set(held))
    val = np.isin(np.asarray(rr.episode), rng.choice(rest, size=max(1, len(rest) // 5), replace=False))
    return ~is_held & ~val, val, is_held, held


def scores(v: np.ndarray, success: np.ndarray, chunk: np.ndarray, episode: np.ndarray, held: list[str],
           boot: int, seed: int) -> dict:
    """AUC of ``v`` for the held-out rows' episode outcome, overall and per chunk bucket, with 95%
    intervals from resampling held-out episodes."""
    from mbpo_ray.rl.critic import auc

    rows = [np.flatnonzero(episode == e) for e in held]
    rng = np.random.default_rng(seed)
    draws = [np.arange(len(held))] + [rng.integers(0, len(held), len(held)) for _ in range(boot)]
    out = {}
    for name, (lo, hi) in [("all", (0, 10**9)), *[(bucket_label(*b), b) for b in BUCKETS]]:
        sel = (chunk >= lo) & (chunk <= hi)
        vals = []
        for d in draws:
            idx = np.concatenate([rows[k] for k in d])
            idx = idx[sel[idx]]
            vals.append(auc(v[idx], success[idx]))
        ok = np.array(vals[1:])
        ok = ok[np.isfinite(ok)]
        base = np.flatnonzero(sel & np.isin(episode, held))
        out[name] = {"auc": round(vals[0], 4), "auc_ci95": [round(float(x), 4) for x in np.percentile(ok, [2.5, 97.5])]
                     if len(ok) else [float("nan")] * 2, "states": int(len(base)),
                     "episodes_success": int(len({e for e in episode[base][success[base]]})),
                     "episodes_failure": int(len({e for e in episode[base][~success[base]]}))}
    return out


def curve_fits(rr, train: np.ndarray, val: np.ndarray, sizes: list[int], seed: int) -> list[tuple]:
    """(name, train rows, validation rows) per size: the demonstrations and the first ``size`` of the
    training rollouts in one seeded order (each set holds the smaller ones)."""
    episode, demo = np.asarray(rr.episode), np.asarray(rr.source) == "demo"
    pool = sorted(set(episode[train & ~demo]))
    order = np.random.default_rng(seed + 1).permutation(len(pool))
    out = []
    for n in sizes:
        if not 0 < n <= len(pool):
            raise SystemExit(f"--train-rollouts {n}: the training split holds {len(pool)} policy rollouts "
                             f"(pass sizes from 1 to {len(pool)})")
        chosen = [pool[i] for i in order[:n]]
        out.append((f"demos + {n} rollouts", train & (demo | np.isin(episode, chosen)), val))
    return out


def trunk_values(policy, rr, train: np.ndarray, val: np.ndarray, steps: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """V(s) of every row from a copy of ``policy`` whose trunk and value head were regressed on the
    ``train`` rows' returns (``rl.critic.fit_value_network``: Adam at 1e-4, minibatches of 32; the
    weights with the lowest ``val`` error kept); the losses per step."""
    import torch

    from mbpo_ray.rl.critic import fit_value_network, network_values

    net, losses = fit_value_network(policy, rr, train, val, steps, seed)
    with torch.no_grad():
        return network_values(net, rr.observations(np.arange(len(rr)))).numpy(), losses


def plot(name: str, fits: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["all"] + [bucket_label(*b) for b in BUCKETS]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    x = np.arange(len(labels))
    colours = plt.get_cmap("tab10").colors
    width = 0.6 / max(1, len(fits) - 1)
    for k, fit in enumerate(fits):
        a = np.array([fits[fit]["auc"][lab]["auc"] for lab in labels], float)
        ci = np.array([fits[fit]["auc"][lab]["auc_ci95"] for lab in labels], float)
        ax.errorbar(x + (k - (len(fits) - 1) / 2) * width, a, yerr=np.clip([a - ci[:, 0], ci[:, 1] - a], 0, None), fmt="o", capsize=3,
                    color=colours[k % len(colours)], label=fit)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ROC AUC, held-out rollouts (95% CI)", fontsize=8)
    ax.set_title("Does V(s) tell states the policy succeeds from from states it fails from?", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="an SFT policy checkpoint")
    ap.add_argument("--store", required=True, help="a replay store with demonstrations and policy rollouts")
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--heldout", type=float, default=0.33, help="share of the policy rollouts held out")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-rollouts", type=int, nargs="*", default=[], dest="train_rollouts",
                    help="also fit on the demonstrations and this many training rollouts (a learning curve)")
    ap.add_argument("--end-to-end", type=int, default=0, dest="end_to_end", metavar="STEPS",
                    help="also fit a copy of the whole policy (trunk and value head) for this many steps")
    ap.add_argument("--name", default="critic_fidelity")
    args = ap.parse_args()
    import torch

    from mbpo_ray.config import parse_task_ids
    from mbpo_ray.policy import load_policy
    from mbpo_ray.rl.critic import fitted_copy, real_returns, value_features

    t0 = time.time()
    torch.manual_seed(args.seed)
    rr = real_returns(os.path.expanduser(args.store), args.gamma, parse_task_ids(args.tasks), max_rows=10**7)
    policy = load_policy(os.path.expanduser(args.policy)).eval()
    feats = value_features(policy, rr.observations(np.arange(len(rr))))
    train, val, held_rows, held = split(rr, args.heldout, args.seed)
    demo = np.asarray(rr.source) == "demo"
    success = rr.returns > 0
    episode = np.asarray(rr.episode)
    fits = {}
    fitted = [("demos + rollouts", train, val), *curve_fits(rr, train, val, args.train_rollouts, args.seed),
              ("demos only", train & demo, val & demo), ("checkpoint (not fitted)", None, None)]
    if args.end_to_end:
        fitted.insert(1, ("demos + rollouts, trunk trained", train, val))
    for fit, rows, check in fitted:
        if fit.endswith("trunk trained"):
            v, losses = trunk_values(policy, rr, rows, check, args.end_to_end, args.seed)
        else:
            head, losses = fitted_copy(policy, feats, rr.returns, rows, check, args.steps, args.seed) \
                if rows is not None else (policy.value_head, [])
            with torch.no_grad():
                v = head(torch.from_numpy(feats)).squeeze(-1).numpy()
        mse = float(np.mean((v[held_rows] - rr.returns[held_rows]) ** 2))
        fits[fit] = {"train_rows": int(rows.sum()) if rows is not None else 0,
                     "val_rows": int(check.sum()) if check is not None else 0,
                     "loss_last": round(float(np.mean(losses[-100:])), 5) if losses else None,
                     "heldout_mse": round(mse, 5),
                     "auc": scores(v, success, rr.chunk, episode, held, args.boot, args.seed)}
        print(f"{fit:26s} held-out AUC {fits[fit]['auc']['all']['auc']:.3f} {fits[fit]['auc']['all']['auc_ci95']}")
    result = {"tasks": args.tasks, "gamma": args.gamma, "steps": args.steps, "end_to_end_steps": args.end_to_end,
              "heldout_episodes": len(held),
              "heldout_success": int(len({e for e in episode[held_rows & success]})),
              "rows": int(len(rr)), "feature_dim": int(feats.shape[1]), "fits": fits,
              "learning_curve": [{"rollouts": n, **fits[f"demos + {n} rollouts"]["auc"]["all"]}
                                 for n in args.train_rollouts],
              "seconds": round(time.time() - t0, 1), "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result)
    plot(args.name, fits)


if __name__ == "__main__":
    main()
