"""Where do a group's branches differ in outcome? The SFT policy's branches run in LIBERO itself.

    python benchmarks/branch_signal.py --policy SFT_CKPT --store STORE [--tasks 0-3] [--start-states 16]
        [--group-size 8] [--n-chunks 2 4 8] [--temperatures 1.0 2.0] [--sampler reverse]
        [--start-window 8] [--fail-weight 1] [--workers 2] [--seed 0] [--name branch_signal]

A group-relative update learns only from groups whose branches end differently: if every branch
from a start state succeeds, or every one fails, the sampled actions did not matter there and the
group carries no signal, however good the world model. This measures that ceiling directly: start
states with a recorded simulator state are drawn once (``--sampler`` at iteration 0, with
``--start-window`` / ``--fail-weight`` as mbpo.start_window / fail_weight), and for every cell
(branch length n, policy temperature T) each is branched ``--group-size`` times in LIBERO by env-runner
actors (``EnvRunner.policy_branch``: the policy sampling on the real frames after each chunk, as
``mbpo.mode=simulator`` runs them). The same start states in every cell. Per cell: success per
branch (overall, by chunks to go and by whether the start's episode succeeded), the share of
informative groups (some but not all branches succeed) with a bootstrap interval over start states,
and the mean within-group outcome variance p(1-p). Writes benchmarks/results/NAME.{json,png} after
every cell (an interrupted run keeps the cells it finished).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_branch_start_args,
    draw_sim_starts,
    provenance,
    save_figure,
    write_result,
)


def starts(args):
    """(jobs' common fields per start, chunks to go, whether the start's episode succeeded)."""
    from mbpo_ray.replay.samplers import chunks_to_go

    store, ep, chunk, _, sims = draw_sim_starts(args)
    eps = [store.episodes[int(e)] for e in ep]
    common = [{"suite": e.suite, "task_id": e.task_id, "sim_state": s} for e, s in zip(eps, sims, strict=True)]
    return common, chunks_to_go(store.episodes, ep, chunk), np.array([e.success for e in eps])


def run_cell(runners, args, common: list[dict], n: int, temp: float) -> tuple[np.ndarray, int]:
    """(S, G) successes of the cell's branches and their env steps."""
    from actors.env_runner import run_by_task
    from mbpo_ray.seeds import derive_seed

    jobs = [{**c, "checkpoint": args.policy, "n_chunks": n, "temperature": temp,
             "seed": derive_seed(args.seed, n, round(temp * 1000), s, g) % 2**31}
            for s, c in enumerate(common) for g in range(args.group_size)]
    res = run_by_task(runners, jobs, None, "policy_branch")
    return np.array([r["success"] for r in res]).reshape(len(common), args.group_size), sum(r["steps"] for r in res)


def summarize(succ: np.ndarray, to_go: np.ndarray, start_ok: np.ndarray, seed: int) -> dict:
    from mbpo_ray.replay.samplers import TO_GO_BUCKETS, bucket_name

    k = succ.sum(1)
    informative = (k > 0) & (k < succ.shape[1])
    boot = np.random.default_rng(seed).integers(0, len(k), (2000, len(k)))
    by_bucket = {bucket_name(lo, hi): {"starts": int(sel.sum()), "success": round(float(succ[sel].mean()), 4),
                                       "informative": round(float(informative[sel].mean()), 4)}
                 for lo, hi in TO_GO_BUCKETS if (sel := (to_go >= lo) & (to_go <= hi)).any()}
    by_start = {name: {"starts": int(sel.sum()), "success": round(float(succ[sel].mean()), 4),
                       "informative": round(float(informative[sel].mean()), 4)}
                for name, sel in (("succeeded_episode", start_ok), ("failed_episode", ~start_ok)) if sel.any()}
    p = succ.mean(1)
    return {"success": round(float(succ.mean()), 4), "informative_groups": int(informative.sum()),
            "informative_share": round(float(informative.mean()), 4),
            "informative_share_ci95": [round(float(x), 4) for x in np.percentile(informative[boot].mean(1), [2.5, 97.5])],
            "within_group_variance": round(float((p * (1 - p)).mean()), 4),
            "by_chunks_to_go": by_bucket, "by_start_episode": by_start}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_branch_start_args(ap, start_states=16)
    ap.add_argument("--n-chunks", type=int, nargs="+", default=[2, 4, 8], dest="n_chunks")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--name", default="branch_signal")
    return ap


def main() -> None:
    args = parser().parse_args()
    args.policy = os.path.expanduser(args.policy)
    from tqdm import tqdm

    from actors.env_runner import make_env_runners
    from mbpo_ray.config import build_config
    from mbpo_ray.connect import connect_ray, kill_actor
    from mbpo_ray.mbpo import actor_config

    prov = provenance()  # the partial results written after each cell keep the run's own commit
    common, to_go, start_ok = starts(args)
    connect_ray(args.workers)
    runners = make_env_runners(actor_config(build_config(), args.policy)[0], None, args.workers)
    cells = []
    try:
        for n in tqdm(args.n_chunks, desc="branch length"):
            for temp in args.temperatures:
                t0 = time.perf_counter()
                succ, steps = run_cell(runners, args, common, n, temp)
                cells.append({"n_chunks": n, "temperature": temp, "env_steps": steps,
                              "seconds": round(time.perf_counter() - t0, 1),
                              **summarize(succ, to_go, start_ok, args.seed), "outcomes": succ.astype(int).tolist()})
                print(f"n={n} T={temp}: success {cells[-1]['success']:.2f}, informative groups "
                      f"{cells[-1]['informative_groups']}/{len(common)}", flush=True)
                result = {"start_states": len(common), "group_size": args.group_size, "tasks": args.tasks,
                          "sampler": args.sampler, "start_window": args.start_window, "fail_weight": args.fail_weight,
                          "seed": args.seed, "chunks_to_go": to_go.tolist(),
                          "start_episode_succeeded": start_ok.tolist(), "cells": cells}
                write_result(args.name, result, prov)
                plot(result, args.name)
    finally:
        for r in runners:
            kill_actor(r)


def plot(r: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for k, temp in enumerate(sorted({c["temperature"] for c in r["cells"]})):
        cs = [c for c in r["cells"] if c["temperature"] == temp]
        x = [c["n_chunks"] for c in cs]
        share = np.array([c["informative_share"] for c in cs])
        lo, hi = (np.array([c["informative_share_ci95"][i] for c in cs]) for i in (0, 1))
        a.errorbar(np.array(x) * (1 + 0.03 * k), share, yerr=[share - lo, hi - share], marker="o", capsize=3,
                   label=f"policy temperature {temp:g}")
        b.plot(x, [c["success"] for c in cs], marker="o", label=f"T {temp:g}")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("branch length n (chunks)")
        ax.legend(fontsize=7)
    a.set_ylabel("groups whose branches end differently")
    a.set_title(f"{r['start_states']} start states x {r['group_size']} branches in LIBERO (95% bootstrap CI)",
                fontsize=8)
    b.set_ylabel("success per branch")
    b.set_title(f"sampler {r['sampler']}, window {r['start_window']}, tasks {r['tasks']}", fontsize=8)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
