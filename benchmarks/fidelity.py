"""The paper's claims at small scale: VLA-MBPO from a few-shot SFT policy, branch length n in {1, 2, 4},
and behaviour cloning inside the world model, with the project's own loop (`mbpo-ray train`: vLLM
world-model workers, DDP learners, LIBERO env runners on a local Ray cluster), evaluated with
LIBERO's protocol.

    python benchmarks/fidelity.py --policy SFT_CKPT --sft-eval SFT_EVAL_JSON --world-model WM_CKPT \\
        --store DEMO_STORE --work DIR [--n-chunks 1 2 4] [--bc] [--seeds 0] [--iterations 15] [--episodes 50]
        [--eval-every K] [--critic-init checkpoint|zero] [--run-only 2:1 bc:0 ...]

Real-data budget: the SFT policy's own demonstrations, nothing more. MBPO starts its branches from a
store holding exactly those demonstrations (copied out of DEMO_STORE by episode id) and collects no
real rollouts (``mbpo.real_every=0``); the world model is used as given (its own training data is
recorded in the JSON). Every MBPO run ends with an evaluation on init states 0..episodes-1 of each
task, greedy actions, the suite's step limit: the protocol of ``mbpo-ray eval``, whose report of
the same SFT checkpoint (SFT_EVAL_JSON) gives the SFT rows. ``--bc`` adds the "BC (world model)"
rows: the same loop, branches and budget with ``mbpo.objective=bc`` (the policy imitates the imagined
chunks of branches the world model judged successful) at the paper's branch length, 2 chunks.
Writes benchmarks/results/fidelity.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, read_result, write_result  # noqa: E402

PAPER_LIBERO_LONG = {"mbpo_n1": 63.9, "mbpo_n2": 66.8, "mbpo_n4": 62.9, "mbpo_full": 52.8}


def budget_store(src: str, policy_dir: str, dst: Path) -> tuple[list[str], int]:
    """A store with only the SFT policy's demonstrations; returns their ids and env steps."""
    from mbpo_ray.policy import read_policy_meta
    from mbpo_ray.replay import ReplayStore

    ids = [i for v in read_policy_meta(policy_dir)["demos"].values() for i in v]
    source = ReplayStore.open(src)
    if not (dst / "store.json").exists():
        out = ReplayStore.create(str(dst), source.spec)
        for i in ids:
            out.append(source.read_episode(i))
    out = ReplayStore.open(str(dst))
    if sorted(e.episode_id for e in out.episodes) != sorted(ids):
        raise SystemExit(f"{dst} does not hold exactly the SFT demonstrations: remove it and run again")
    return ids, sum(e.env_steps for e in out.episodes)


def world_model_data(src: str, wm: str) -> dict:
    from mbpo_ray.replay import ReplayStore

    split = json.loads((Path(wm) / "split.json").read_text())
    meta = {e.episode_id: e for e in ReplayStore.open(src).episodes}
    train = [meta[i] for i in split["train"] if i in meta]
    return {"episodes": len(split["train"]), "env_steps": sum(e.env_steps for e in train),
            "tasks": sorted({e.task_id for e in train})}


BC_CHUNKS = 2  # branch length of the BC (world model) runs
# run folder and method suffix per mbpo.critic_init: zero-critic runs are rows of their own
CRITIC_SUFFIX = {"checkpoint": "", "zero": "_critic_zero"}


def run_mbpo(args, store: str, n: int, seed: int, objective: str = "ppo", critic: str = "checkpoint") -> Path | None:
    """The run's folder once it has its final evaluation (a complete earlier run is kept); None when
    ``--run-only`` or another ``--critic-init`` leaves it out."""
    from mbpo_ray.cli import main

    bc = objective == "bc"
    out = Path(args.work) / (f"bc_n{n}_seed{seed}" if bc else f"mbpo_n{n}_seed{seed}{CRITIC_SUFFIX[critic]}")
    if (out / "metrics.jsonl").exists() and any("eval/success" in json.loads(x)
                                                   for x in (out / "metrics.jsonl").read_text().splitlines()):
        print(f"{out} is complete: kept", flush=True)
        return out
    if critic != args.critic_init or args.run_only is not None and f"{'bc' if bc else n}:{seed}" not in args.run_only:
        return None
    if out.exists():  # an interrupted run starts over
        import shutil

        shutil.rmtree(out)
    argv = ["train", "--policy", args.policy, "--world-model", args.world_model, "--store", store, "--out", str(out),
            f"--mbpo.objective={objective}", f"--mbpo.n_chunks={n}", f"--mbpo.seed={seed}", f"--mbpo.iterations={args.iterations}",
            f"--mbpo.tasks={args.tasks}", f"--mbpo.branches={args.branches}", f"--mbpo.actor_lr={args.actor_lr}",
            f"--mbpo.updates_per_batch={args.updates}", f"--mbpo.critic_warmup={args.critic_warmup}",
            f"--mbpo.critic_init={critic}",
            "--mbpo.real_every=0", f"--mbpo.eval_episodes={args.episodes}", f"--mbpo.eval_every={args.eval_every}",
            "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1", "--mbpo.learners=1", "--mbpo.env_runners=2",
            "--mbpo.worker_cpus=0.5", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.5",
            f"--mbpo.checkpoint_every={args.iterations}"]
    if main(argv):
        raise SystemExit(f"mbpo-ray {' '.join(argv)} failed")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="the SFT checkpoint")
    ap.add_argument("--sft-eval", help="eval.json of `mbpo-ray eval` on that checkpoint")
    ap.add_argument("--world-model")
    ap.add_argument("--store", help="a store holding the SFT demonstrations")
    ap.add_argument("--work")
    ap.add_argument("--tasks", default="0-1")
    ap.add_argument("--n-chunks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--bc", action="store_true", help=f"add BC (world model) runs ({BC_CHUNKS}-chunk branches)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--branches", type=int, default=32)
    ap.add_argument("--actor-lr", default="5e-5")
    ap.add_argument("--updates", type=int, default=8)
    ap.add_argument("--critic-warmup", type=int, default=3)
    ap.add_argument("--critic-init", choices=("checkpoint", "zero"), default="checkpoint",
                    help="mbpo.critic_init of the MBPO runs to start (complete runs of either are reported; "
                    "zero-critic rows are methods of their own, mbpo_nN_critic_zero)")
    ap.add_argument("--run-only", nargs="+", metavar="N:SEED",  # bc:SEED for a BC run
                    help="start only these runs; other (n, seed) pairs are reported if complete, else left out")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result("fidelity"))
    missing = [n for n in ("policy", "sft_eval", "world_model", "store", "work") if getattr(args, n) is None]
    if missing:
        ap.error(f"the following arguments are required: {', '.join('--' + n.replace('_', '-') for n in missing)}")
    for name in ("policy", "world_model", "store", "work", "sft_eval"):
        setattr(args, name, os.path.expanduser(getattr(args, name)))
    Path(args.work).mkdir(parents=True, exist_ok=True)
    ids, demo_steps = budget_store(args.store, args.policy, Path(args.work) / "budget_store")
    sft = json.loads(Path(args.sft_eval).read_text())
    if Path(sft["checkpoint"]).is_absolute() and Path(sft["checkpoint"]).resolve() != Path(args.policy).resolve():
        raise SystemExit(f"{args.sft_eval} evaluated {sft['checkpoint']}, not {args.policy}")
    rows, curves = [], {}
    for t, r in sft["tasks"].items():
        rows.append({"method": "sft", "task": int(t), "seed": 0, "success_rate": r["success_rate"],
                     "episodes": r["episodes"], "real_env_steps": demo_steps, "iteration": 0})
    runs = [(f"mbpo_n{n}{CRITIC_SUFFIX[c]}", n, "ppo", c) for c in CRITIC_SUFFIX for n in args.n_chunks]
    runs += [("bc_world_model", BC_CHUNKS, "bc", "checkpoint")] if args.bc else []
    for method, n, objective, critic in runs:
        for seed in args.seeds:
            out = run_mbpo(args, str(Path(args.work) / "budget_store"), n, seed, objective, critic)
            if out is None:
                continue
            logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            evals = [x for x in logs if "eval/success" in x]
            curves[f"{method}_seed{seed}"] = [
                {"iteration": x["iteration"], "success": x["eval/success"],
                 "imagined_reward": x["imagine/reward_mean"]} for x in evals]
            last = evals[-1]
            for t in sft["tasks"]:
                rows.append({"method": method, "task": int(t), "seed": seed, "n_chunks": n, "critic_init": critic,
                             "success_rate": last[f"eval/success_task{t}"], "episodes": args.episodes,
                             "real_env_steps": demo_steps, "iteration": last["iteration"],
                             "imagined_chunk_transitions": int(sum(x["imagine/chunk_transitions"] for x in logs)),
                             "imagined_successful_branches": round(sum(x["imagine/reward_mean"] for x in logs)
                                                                   * args.branches)})
    summary = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        per_seed = [float(np.mean([r["success_rate"] for r in mine if r["seed"] == s]))
                    for s in sorted({r["seed"] for r in mine})]
        summary[m] = {"mean": round(float(np.mean(per_seed)), 4), "seeds": sorted({r["seed"] for r in mine}),
                      "per_seed_mean": [round(x, 4) for x in per_seed],
                      "seed_spread": round(max(per_seed) - min(per_seed), 4),
                      "per_task": {t: round(float(np.mean([r["success_rate"] for r in mine if r["task"] == t])), 4)
                                   for t in sorted({r["task"] for r in mine})}}
    quality = read_result("world_model_quality")
    from mbpo_ray.policy import load_policy

    vla_params = sum(p.numel() for p in load_policy(args.policy).parameters()) / 1e6
    result = {
        "scale": (f"libero_spatial tasks {args.tasks}, {len(ids)} scripted demonstrations "
                  f"({demo_steps} env steps) as the whole real-data budget, a {vla_params:.1f} M-parameter VLA "
                  f"trained from scratch, a 3.6 M-parameter UMM world model, {args.iterations} "
                  f"MBPO iterations of {args.branches} branches, {args.episodes} init states per task "
                  "(seeds per method in summary)"),
        "rows": rows, "summary": summary, "curves": curves,
        "world_model_training_data": world_model_data(args.store, args.world_model),
        "world_model_quality": {k: quality[k] for k in ("head", "wrist", "reward")},
        "paper_libero_long_success": PAPER_LIBERO_LONG,
        "bc_world_model": (f"mbpo.objective=bc, {BC_CHUNKS}-chunk branches, the MBPO runs' settings: the policy "
                           "imitates the imagined chunks of branches the world model judged successful"
                           if args.bc else "not run (pass --bc)"),
        "settings": {"actor_lr": args.actor_lr, "updates_per_batch": args.updates, "critic_warmup": args.critic_warmup,
                     "branches": args.branches, "iterations": args.iterations, "real_every": 0},
    }
    write_result("fidelity", result)
    plot(result)


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    sft = r["summary"]["sft"]["mean"]
    methods = list(dict.fromkeys(name.rsplit("_seed", 1)[0] for name in r["curves"]))
    for k, m in enumerate(methods):  # one colour per method, its seeds as thin lines, the mean bold
        colour, dx = plt.cm.tab10(k), 0.25 * (k - (len(methods) - 1) / 2)  # offset: equal values stay visible
        runs = [pts for name, pts in r["curves"].items() if name.rsplit("_seed", 1)[0] == m]
        for pts in runs:
            a.plot([dx] + [p["iteration"] + dx for p in pts], [sft] + [p["success"] for p in pts], color=colour,
                   alpha=0.45, linewidth=1, marker=".")
        last = max(pts[-1]["iteration"] for pts in runs)
        mean = np.mean([pts[-1]["success"] for pts in runs if pts[-1]["iteration"] == last])
        a.plot([dx, last + dx], [sft, mean], color=colour, linewidth=2.2, marker="o", label=f"{m} ({len(runs)} seeds)")
    a.set_xlabel("MBPO iteration (0 = SFT); thin: seeds, bold: their mean")
    a.set_ylabel("LIBERO success (mean over tasks)")
    a.set_title(f"Success vs iteration (no real rollouts: every point at {r['rows'][0]['real_env_steps']} "
                "real env steps)", fontsize=8)
    a.legend(fontsize=7)
    methods = sorted(r["summary"], key=lambda m: (m != "sft", m != "bc_world_model", m))
    means = [100 * r["summary"][m]["mean"] for m in methods]
    episodes = [sum(x["episodes"] for x in r["rows"] if x["method"] == m) for m in methods]
    ci95 = [196 * np.sqrt(max(p / 100 * (1 - p / 100), 1e-9) / n) for p, n in zip(means, episodes, strict=True)]
    colours = {"sft": "#999999", "bc_world_model": "#ccbb44"}
    bars = b.bar([m.replace("_world_model", " (WM)").replace("_critic_zero", "\nV0=0") for m in methods], means,
                 yerr=ci95, capsize=4,
                 color=[colours.get(m, "#66ccee" if m.endswith("critic_zero") else "#4477aa") for m in methods])
    b.tick_params(axis="x", labelsize=7)
    b.bar_label(bars, labels=[f"{v:.0f}%" for v in means], fontsize=8, label_type="center", color="white")
    steps = r["rows"][0]["real_env_steps"]
    b.set_ylabel(f"success at {steps} real env steps (%)")
    b.set_title("Same real-data budget: SFT, BC in the world model, MBPO by branch length\n"
                "(whiskers: 95% binomial CI over each bar's episodes)", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "fidelity.png")
    print(f"wrote {RESULTS / 'fidelity.png'}")


if __name__ == "__main__":
    main()
