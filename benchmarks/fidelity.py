"""The paper's claims at small scale: VLA-MBPO from a few-shot SFT policy, branch length n in {1, 2, 4},
group-relative VLA-MBPO and its null control, and behaviour cloning inside the world model, with the
project's own loop (`mbpo-ray train`: vLLM world-model workers, DDP learners, LIBERO env runners on a
local Ray cluster), evaluated with LIBERO's protocol and compared with SFT episode by episode.

    python benchmarks/fidelity.py --policy SFT_CKPT --sft-eval SFT_EVAL_JSON --world-model WM_CKPT \\
        --store DEMO_STORE --work DIR [--tasks 0-3] [--n-chunks 1 2 4] [--bc] [--grpo] [--null-control]
        [--group-size 8] [--seeds 0 1] [--iterations 15] [--episodes 50] [--eval-every K]
        [--critic-init checkpoint|zero] [--simulator 2 4] [--name fidelity]
        [--set mbpo.FIELD=VALUE ...] [--run-only 2:1 bc:0 grpo:1 null:0 sim2:0 ...]

Real-data budget: the SFT policy's own demonstrations, nothing more. MBPO starts its branches from a
store holding exactly those demonstrations (copied out of DEMO_STORE by episode id) and collects no
real rollouts (``mbpo.real_every=0``); the world model is used as given (its own training data is
recorded in the JSON). Every MBPO run ends with an evaluation on init states 0..episodes-1 of each
task, greedy actions, the suite's step limit: the protocol of ``mbpo-ray eval``, whose report of
the same SFT checkpoint (SFT_EVAL_JSON) gives the SFT rows. Each run's outcomes are paired with
SFT's on the same (task, init state) and tested with the exact McNemar test (``p_value_vs_sft``).
``--bc`` adds "BC (world model)" (``mbpo.objective=bc``); ``--grpo`` the group-relative objective
(``mbpo_grpo_n2``: ``--group-size`` branches per start state); ``--null-control`` the same
group-relative loop with the imagined returns shuffled across branches (``null_control``), all at
the paper's branch length, 2 chunks. ``--set`` passes overrides to every run started (the start
sampler, KL anchor, learning rate...); rows record them. ``--simulator N ...`` adds the ceiling:
the group-relative loop with its branches of N chunks run in LIBERO itself from the same start states
(``mbpo.mode=simulator``, ``simulator_grpo_nN``), what VLA-MBPO would gain with a perfect world model
(its branches' env steps are recorded in the row, ``branch_env_steps``). Writes
benchmarks/results/NAME.{json,png} (``--name``, default fidelity).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, eval_outcomes, mcnemar_exact, read_result, run_outcomes, write_result  # noqa: E402

PAPER_LIBERO_LONG = {"mbpo_n1": 63.9, "mbpo_n2": 66.8, "mbpo_n4": 62.9, "mbpo_full": 52.8}


def sft_demo_ids(policy_dir: str) -> list[str]:
    """The episode ids of the demonstrations the SFT checkpoint was trained on."""
    from mbpo_ray.policy import read_policy_meta

    return [i for v in read_policy_meta(policy_dir)["demos"].values() for i in v]


def demo_budget(src: str, policy_dir: str) -> tuple[list[str], int]:
    """The SFT demonstrations' ids and their env steps, read from ``src``'s index (nothing copied)."""
    from mbpo_ray.replay import ReplayStore

    ids = sft_demo_ids(policy_dir)
    steps = {e.episode_id: e.env_steps for e in ReplayStore.open(src).episodes}
    missing = [i for i in ids if i not in steps]
    if missing:
        raise SystemExit(f"{src} lacks {len(missing)} of the SFT demonstrations (e.g. {missing[0]}): pass the "
                         "store the checkpoint was trained from")
    return ids, sum(steps[i] for i in ids)


def budget_store(src: str, policy_dir: str, dst: Path) -> tuple[list[str], int]:
    """A store with only the SFT policy's demonstrations; returns their ids and env steps."""
    from mbpo_ray.replay import ReplayStore

    ids = sft_demo_ids(policy_dir)
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


BC_CHUNKS = 2  # branch length of the BC (world model) and group-relative runs
# run folder and method suffix per mbpo.critic_init: zero-critic runs are rows of their own
CRITIC_SUFFIX = {"checkpoint": "", "zero": "_critic_zero"}


@dataclass(frozen=True)
class Method:
    """One row family of the table: a method name, its run-folder prefix and --run-only key, and
    the overrides that make it."""

    name: str
    folder: str
    key: str
    n: int
    objective: str = "ppo"
    critic: str = "checkpoint"
    overrides: tuple[str, ...] = ()
    mode: str = "mbpo"  # mbpo.mode: simulator runs have no world model


def methods(args) -> list[Method]:
    out = [Method(f"mbpo_n{n}{CRITIC_SUFFIX[c]}", f"mbpo_n{n}", str(n), n, critic=c)
           for c in CRITIC_SUFFIX for n in args.n_chunks]
    if args.bc:
        out.append(Method("bc_world_model", f"bc_n{BC_CHUNKS}", "bc", BC_CHUNKS, "bc"))
    grpo = (f"--mbpo.group_size={args.group_size}",)
    if args.grpo:
        out.append(Method(f"mbpo_grpo_n{BC_CHUNKS}", f"grpo_n{BC_CHUNKS}", "grpo", BC_CHUNKS, "grpo", overrides=grpo))
    if args.null_control:  # the group-relative loop with the imagined returns shuffled across branches
        out.append(Method("null_control", f"null_grpo_n{BC_CHUNKS}", "null", BC_CHUNKS, "grpo",
                          overrides=(*grpo, "--mbpo.null_control=true")))
    for n in args.simulator:  # the same group-relative loop, its branches run in LIBERO: the ceiling
        out.append(Method(f"simulator_grpo_n{n}", f"sim_grpo_n{n}", f"sim{n}", n, "grpo",
                          overrides=(*grpo, "--mbpo.mode=simulator"), mode="simulator"))
    return out


def run_mbpo(args, store: str, m: Method, seed: int) -> Path | None:
    """The run's folder once it has its final evaluation (a complete earlier run is kept); None when
    ``--run-only`` or another ``--critic-init`` leaves it out."""
    from mbpo_ray.cli import main

    out = Path(args.work) / f"{m.folder}_seed{seed}{CRITIC_SUFFIX[m.critic]}"
    if (out / "metrics.jsonl").exists() and any("eval/success" in json.loads(x)
                                                   for x in (out / "metrics.jsonl").read_text().splitlines()):
        print(f"{out} is complete: kept", flush=True)
        return out
    if m.critic != args.critic_init or args.run_only is not None and f"{m.key}:{seed}" not in args.run_only:
        return None
    if out.exists():  # an interrupted run starts over
        import shutil

        shutil.rmtree(out)
    wm = ["--world-model", args.world_model] if m.mode == "mbpo" else []
    argv = ["train", "--policy", args.policy, *wm, "--store", store, "--out", str(out),
            f"--mbpo.objective={m.objective}", f"--mbpo.n_chunks={m.n}", f"--mbpo.seed={seed}",
            f"--mbpo.iterations={args.iterations}",
            f"--mbpo.tasks={args.tasks}", f"--mbpo.branches={args.branches}", f"--mbpo.actor_lr={args.actor_lr}",
            f"--mbpo.updates_per_batch={args.updates}", f"--mbpo.critic_warmup={args.critic_warmup}",
            f"--mbpo.critic_init={m.critic}",
            "--mbpo.real_every=0", f"--mbpo.eval_episodes={args.episodes}", f"--mbpo.eval_every={args.eval_every}",
            "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1", "--mbpo.learners=1", "--mbpo.env_runners=2",
            "--mbpo.worker_cpus=0.5", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.5",
            f"--mbpo.checkpoint_every={args.iterations}", *(f"--{x}" for x in args.set), *m.overrides]
    if main(argv):
        raise SystemExit(f"mbpo-ray {' '.join(argv)} failed")
    return out


def paired_outcomes(sft: dict, run: Path, iteration: int) -> tuple[list[bool], list[bool], list[int]]:
    """SFT's and the run's outcome on each (task, init state) both evaluated; the init states used."""
    mine, base = run_outcomes(run, iteration), eval_outcomes(sft)
    if set(mine) - set(base):
        raise SystemExit(f"{run}: evaluated init states that the SFT evaluation did not: no paired test")
    return [base[k] for k in mine], list(mine.values()), sorted({i for _, i in mine})


def near_goal_thirds(logs: list[dict], third: int) -> dict:
    """Imagined success per branch from starts one or two chunks before their episode's end, in the
    first and last third of the iterations: the overall rate also moves with the start states a
    curriculum draws, this one only with the policy (and the draw's noise)."""
    def rate(part: list[dict]) -> float | None:
        n = sum(x.get("imagine/starts_to_go_1-2", 0) for x in part)
        hit = sum(x.get("imagine/success_to_go_1-2", 0.0) * x.get("imagine/starts_to_go_1-2", 0) for x in part)
        return round(hit / n, 4) if n else None

    return {"imagined_success_to_go_1-2_first_third": rate(logs[:third]),
            "imagined_success_to_go_1-2_last_third": rate(logs[-third:])}


def run_rows(args, sft: dict, m: Method, seed: int, out: Path, demo_steps: int, curves: dict) -> list[dict]:
    """One row per task of a finished run (its last evaluation), with the run's paired test against
    SFT on the same init states and its imagined success in the first and last third of iterations."""
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in logs if "eval/success" in x]
    curves[f"{m.name}_seed{seed}"] = [{"iteration": x["iteration"], "success": x["eval/success"],
                                       "imagined_reward": x["imagine/reward_mean"]} for x in evals]
    last = evals[-1]
    base, mine, inits = paired_outcomes(sft, out, last["iteration"])
    test = mcnemar_exact(base, mine)
    third = max(1, len(logs) // 3)
    success = [x["imagine/reward_mean"] for x in logs]  # imagined successes per branch (reward 1 at a success)
    rows = []
    for t in sft["tasks"]:
        rows.append({"method": m.name, "task": int(t), "seed": seed, "n_chunks": m.n, "critic_init": m.critic,
                     "objective": m.objective, "mode": m.mode, "overrides": [*(f"--{x}" for x in args.set), *m.overrides],
                     "success_rate": last[f"eval/success_task{t}"], "episodes": args.episodes,
                     "real_env_steps": demo_steps, "iteration": last["iteration"],
                     "p_value_vs_sft": test["p_value"], "paired": test, "init_states": inits,
                     "imagined_success_first_third": round(float(np.mean(success[:third])), 4),
                     "imagined_success_last_third": round(float(np.mean(success[-third:])), 4),
                     **near_goal_thirds(logs, third),
                     "imagined_chunk_transitions": int(sum(x["imagine/chunk_transitions"] for x in logs)),
                     "imagined_successful_branches": round(sum(success) * args.branches),
                     **({"branch_env_steps": int(last["real/env_steps"])} if m.mode == "simulator" else {})})
    return rows


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="the SFT checkpoint")
    ap.add_argument("--sft-eval", help="eval.json of `mbpo-ray eval` on that checkpoint")
    ap.add_argument("--world-model")
    ap.add_argument("--store", help="a store holding the SFT demonstrations")
    ap.add_argument("--work")
    ap.add_argument("--tasks", default="0-1")
    ap.add_argument("--n-chunks", type=int, nargs="*", default=[1, 2, 4],
                    help="branch lengths of the PPO runs in the world model (none: only the other methods)")
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
    ap.add_argument("--grpo", action="store_true", help=f"add group-relative runs ({BC_CHUNKS}-chunk branches)")
    ap.add_argument("--null-control", action="store_true", dest="null_control",
                    help="add the group-relative loop with imagined returns shuffled across branches")
    ap.add_argument("--group-size", type=int, default=8, dest="group_size", help="branches per start state (grpo)")
    ap.add_argument("--set", nargs="*", default=[], metavar="mbpo.FIELD=VALUE",
                    help="overrides for every run started (e.g. mbpo.start_sampler=reverse)")
    ap.add_argument("--run-only", nargs="+", metavar="N:SEED",  # bc:SEED, grpo:SEED, null:SEED
                    help="start only these runs; other (n, seed) pairs are reported if complete, else left out")
    ap.add_argument("--simulator", type=int, nargs="*", default=[], metavar="N",
                    help="add group-relative runs whose N-chunk branches run in LIBERO (mbpo.mode=simulator)")
    ap.add_argument("--name", default="fidelity", help="the result file's name in benchmarks/results")
    ap.add_argument("--plot-only", action="store_true")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.plot_only:
        return plot(read_result(args.name), args.name)
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
                     "episodes": r["episodes"], "real_env_steps": demo_steps, "iteration": 0,
                     "p_value_vs_sft": None, "init_states": list(range(r["episodes"]))})
    for m in methods(args):
        for seed in args.seeds:
            out = run_mbpo(args, str(Path(args.work) / "budget_store"), m, seed)
            if out is not None:
                rows += run_rows(args, sft, m, seed, out, demo_steps, curves)
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
                     "branches": args.branches, "iterations": args.iterations, "real_every": 0,
                     "group_size": args.group_size, "overrides": [f"--{x}" for x in args.set]},
    }
    write_result(args.name, result)
    plot(result, args.name)


def plot(r: dict, name: str = "fidelity") -> None:
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
    colours = {"sft": "#999999", "bc_world_model": "#ccbb44", "null_control": "#cc6677", "mbpo_grpo_n2": "#228833",
               "simulator_grpo_n2": "#aa3377", "simulator_grpo_n4": "#ee6677"}
    bars = b.bar([m.replace("_world_model", " (WM)").replace("_critic_zero", "\nV0=0") for m in methods], means,
                 yerr=ci95, capsize=4,
                 color=[colours.get(m, "#66ccee" if m.endswith("critic_zero") else "#4477aa") for m in methods])
    b.tick_params(axis="x", labelsize=7)
    b.bar_label(bars, labels=[f"{v:.0f}%" for v in means], fontsize=8, label_type="center", color="white")
    pvals = [sorted({x["seed"]: x.get("p_value_vs_sft") for x in r["rows"] if x["method"] == m}.items()) for m in methods]
    b.bar_label(bars, labels=["" if m == "sft" or any(p is None for _, p in ps) else
                              "p " + ",".join(f"{p:.2g}" for _, p in ps) for m, ps in zip(methods, pvals, strict=True)],
                fontsize=6, padding=8)
    steps = r["rows"][0]["real_env_steps"]
    b.set_ylabel(f"success at {steps} real env steps (%)")
    b.set_title("Same real-data budget: SFT and the methods trained in the world model\n"
                "(whiskers: 95% binomial CI over each bar's episodes; p: exact McNemar vs SFT, per seed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / f'{name}.png'}")


if __name__ == "__main__":
    main()
