"""Self-imitation from real outcomes: behaviour cloning continued on the policy's own successful
rollouts in LIBERO (filtered BC), round after round, from one few-shot SFT checkpoint. The simplest
policy improvement from real rewards, and so the reference that RL from real or imagined data has to
beat at the same real-data budget.

    python benchmarks/self_imitation.py --policy SFT_CKPT --sft-eval SFT_EVAL_JSON --store STORE --work DIR
        [--tasks 0-3] [--rounds 2] [--rollouts 30] [--steps 1000] [--lr 1e-4] [--episodes 50]
        [--reuse-rollouts] [--control] [--seed 0] [--name self_imitation]

Round k: roll the round's start policy out with sampled actions (``mbpo-ray eval --sample
--to-store``, init states 0..rollouts-1 of every task), continue behaviour cloning from it
(``mbpo-ray sft --init``) on the SFT demonstrations plus every successful rollout of rounds 1..k,
then evaluate greedily under LIBERO's protocol (init states 0..episodes-1) with an exact McNemar test
against SFT on the same init states. A round's real env steps are the demonstrations' plus every
rollout's so far, failures included (evaluations are not training data). ``--reuse-rollouts``: the
first round's rollouts are the SFT policy's sampled rollouts that ``--store`` already holds (the
recipe's), so none are collected for it. ``--control``: round k of the control continues the
cloning k times from SFT on the demonstrations alone (no rollouts), evaluated the same way: how far
the same amount of updating moves the outcomes with no new data, the noise a round's gain has to
clear. Every step is skipped once its
output is complete, so an interrupted run continues where it stopped; each round folder's
``made_by.json`` records the command and commit of the run that made each of its steps, and the
result carries it. Writes benchmarks/results/self_imitation.{json,png} after every round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import eval_outcomes, mcnemar_on, provenance, save_figure, write_result  # noqa: E402
from benchmarks.fidelity import demo_budget  # noqa: E402

CLI = [sys.executable, "-m", "mbpo_ray.cli"]


def cli(*argv: str) -> None:
    print("+ mbpo-ray " + " ".join(argv), flush=True)
    if subprocess.run([*CLI, *argv]).returncode:
        raise SystemExit(f"mbpo-ray {' '.join(argv)} failed")


def made_by(folder: Path, step: str | None = None, prov: dict | None = None) -> dict:
    """The command and commit that made each step in ``folder`` (``prov`` recorded for ``step``)."""
    path = folder / "made_by.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if step is not None:
        known[step] = {k: prov[k] for k in ("command", "commit", "date")}
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=2))
    return known


def copy_episodes(src, dst, ids: list[str]) -> None:
    for i in ids:
        dst.append(src.read_episode(i))


def rollouts(args, k: int, policy: str, work: Path, prov: dict) -> Path:
    """The store of round k's sampled rollouts (made once; an incomplete one is made again)."""
    from mbpo_ray.replay import ReplayStore

    out, store = work / f"round{k}" / "rollouts", work / f"round{k}" / "rollouts_store"
    if (out / "eval.json").exists():
        return store
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    src = ReplayStore.open(args.store)
    dst = ReplayStore.create(str(store), src.spec)
    if k == 1 and args.reuse_rollouts:
        mine = [e.episode_id for e in src.episodes if e.source == "real" and e.task_id in args.task_ids]
        if not mine:
            raise SystemExit(f"--reuse-rollouts: {args.store} holds no policy rollouts of tasks {args.tasks}")
        copy_episodes(src, dst, mine)
        out.mkdir(parents=True)
        (out / "eval.json").write_text(json.dumps({"reused_from": args.store, "episodes": len(mine)}))
    else:
        cli("eval", policy, "--tasks", args.tasks, "--episodes-per-task", str(args.rollouts), "--workers", "2",
            "--sample", "--seed", str(1000 * args.seed + k), "--to-store", str(store), "--out", str(out))
    made_by(work / f"round{k}", "rollouts", prov)
    return store


def train_store(args, k: int, work: Path, demo_ids: list[str]) -> Path:
    """The SFT demonstrations and the rollouts of rounds 1..k, in one store."""
    from mbpo_ray.replay import ReplayStore

    path = work / f"round{k}" / "train_store"
    done = path / ".complete"
    if done.exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    src = ReplayStore.open(args.store)
    dst = ReplayStore.create(str(path), src.spec)
    copy_episodes(src, dst, demo_ids)
    for j in range(1, k + 1):
        part = ReplayStore.open(str(work / f"round{j}" / "rollouts_store"))
        copy_episodes(part, dst, [e.episode_id for e in part.episodes])
    done.touch()
    return path


def clone_and_eval(args, folder: Path, store: str, start: str, rollouts_per_task: int, prov: dict) -> tuple[str, dict]:
    """Behaviour cloning from ``start`` on ``store`` into ``folder/policy``, then LIBERO's evaluation."""
    policy, ev = folder / "policy", folder / "eval"
    meta = policy / "policy.json"
    if not (meta.exists() and json.loads(meta.read_text())["step"] == args.steps):
        shutil.rmtree(policy, ignore_errors=True)
        cli("sft", store, "--out", str(policy), "--init", start, "--tasks", args.tasks, "--demos-per-task",
            str(args.demos_per_task), "--rollouts-per-task", str(rollouts_per_task), "--steps", str(args.steps),
            f"--sft.lr={args.lr}", f"--sft.warmup_steps={args.warmup}", "--seed", str(args.seed))
        made_by(folder, "policy", prov)
    if not (ev / "eval.json").exists():
        shutil.rmtree(ev, ignore_errors=True)
        cli("eval", str(policy), "--tasks", args.tasks, "--episodes-per-task", str(args.episodes), "--workers", "2",
            "--out", str(ev))
        made_by(folder, "eval", prov)
    return str(policy), json.loads((ev / "eval.json").read_text())


def improve(args, k: int, start: str, work: Path, demo_ids: list[str], prov: dict) -> tuple[str, dict]:
    """Round k: rollouts of ``start``, behaviour cloning from it on every success so far, evaluation."""
    rollouts(args, k, start, work, prov)
    store = train_store(args, k, work, demo_ids)
    return clone_and_eval(args, work / f"round{k}", str(store), start, 100_000, prov)


def point(args, k: int, report: dict, sft: dict, env_steps: int, used: dict, folder: Path) -> dict:
    base, mine = eval_outcomes(sft), eval_outcomes(report)
    if base.keys() != mine.keys():
        raise SystemExit("the round's evaluation and the SFT evaluation cover different init states: no paired test")
    return {"round": k, "real_env_steps": env_steps, "success_rate": round(report["success_rate"], 4),
            "by_task": {t: r["success_rate"] for t, r in report["tasks"].items()},
            "vs_sft": mcnemar_on(base, mine, sorted(base)), **used, "made_by": made_by(folder)}


def paired(args, reports: dict[str, dict]) -> dict:
    """Round k against control round k on the same init states; each round against SFT on the init
    states its rollouts started from and on the others; how many init states each pair of policies
    disagrees on, and how many have one outcome under every policy."""
    out = {name: eval_outcomes(r) for name, r in reports.items()}
    keys = sorted(out["sft"])
    pair = {"vs_control": {}, "by_init_states": {}, "disagreements": {}}
    for name in (n for n in out if n.startswith("round")):
        ctrl = name.replace("round", "control")
        if ctrl in out:
            pair["vs_control"][name] = mcnemar_on(out[ctrl], out[name], keys)
        for part, sel in (("rollout_starts", lambda i: i < args.rollouts), ("other", lambda i: i >= args.rollouts)):
            ks = [x for x in keys if sel(x[1])]
            if ks:
                pair["by_init_states"].setdefault(name, {})[part] = {
                    "init_states": len(ks), "sft": round(sum(out["sft"][x] for x in ks) / len(ks), 4),
                    name: round(sum(out[name][x] for x in ks) / len(ks), 4),
                    "vs_sft": mcnemar_on(out["sft"], out[name], ks)}
    names = list(out)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pair["disagreements"][f"{a} | {b}"] = sum(out[a][x] != out[b][x] for x in keys)
    pair["same_under_all"] = sum(len({out[n][x] for n in names}) == 1 for x in keys)
    return pair


def rollout_budget(work: Path, k: int) -> dict:
    from mbpo_ray.replay import ReplayStore

    eps = [e for j in range(1, k + 1) for e in ReplayStore.open(str(work / f"round{j}" / "rollouts_store")).episodes]
    return {"rollouts": len(eps), "successful_rollouts": sum(e.success for e in eps),
            "rollout_env_steps": sum(e.env_steps for e in eps)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, text in (("--policy", "the SFT checkpoint"), ("--sft-eval", "eval.json of `mbpo-ray eval` on it"),
                       ("--store", "the store it was trained from"),
                       ("--work", "round folders of this seed (a folder per seed)")):
        ap.add_argument(name, required=True, help=text)
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=30, help="sampled rollouts per task and round (init states 0..n-1)")
    ap.add_argument("--steps", type=int, default=1000, help="behaviour-cloning steps per round")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--episodes", type=int, default=50, help="init states per task in every evaluation")
    ap.add_argument("--reuse-rollouts", action="store_true", dest="reuse_rollouts",
                    help="round 1 learns from the SFT policy's rollouts already in --store")
    ap.add_argument("--control", action="store_true",
                    help="also the same behaviour cloning from SFT on the demonstrations alone")
    ap.add_argument("--seed", type=int, default=0, help="cloning seed; rollouts sample with seed 1000 * seed + round")
    ap.add_argument("--name", default="self_imitation", help="result file name (one per seed)")
    return ap


def main() -> None:
    from mbpo_ray.config import parse_task_ids
    from mbpo_ray.policy import read_policy_meta

    args = parser().parse_args()
    for name in ("policy", "store", "work", "sft_eval"):
        setattr(args, name, os.path.expanduser(getattr(args, name)))
    args.task_ids = parse_task_ids(args.tasks)
    prov = provenance()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sft = json.loads(Path(args.sft_eval).read_text())
    if sorted(int(t) for t in sft["tasks"]) != args.task_ids:
        raise SystemExit(f"{args.sft_eval} evaluated tasks {sorted(sft['tasks'])}, not --tasks {args.tasks}")
    demo_ids, demo_steps = demo_budget(args.store, args.policy)
    args.demos_per_task = max(len(v) for v in read_policy_meta(args.policy)["demos"].values())
    points = [{"round": 0, "real_env_steps": demo_steps, "success_rate": round(sft["success_rate"], 4),
               "by_task": {t: r["success_rate"] for t, r in sft["tasks"].items()}}]
    start, result = args.policy, {"tasks": args.task_ids, "demonstrations": len(demo_ids), "seed": args.seed,
                                  "points": points, "settings": {k: getattr(args, k) for k in (
                                      "rounds", "rollouts", "steps", "lr", "warmup", "episodes", "reuse_rollouts")}}
    reports = {"sft": sft}
    if args.control:  # round k of the control: k times the cloning, on the demonstrations alone
        result["control"], prev = [], args.policy
        for k in range(1, args.rounds + 1):
            folder = work / ("control" if k == 1 else f"control{k}")
            prev, reports[f"control{k}"] = clone_and_eval(args, folder, args.store, prev, 0, prov)
            result["control"].append(point(args, k, reports[f"control{k}"], sft, demo_steps, {"rollouts": 0}, folder))
    for k in range(1, args.rounds + 1):
        start, reports[f"round{k}"] = improve(args, k, start, work, demo_ids, prov)
        used = rollout_budget(work, k)
        points.append(point(args, k, reports[f"round{k}"], sft, demo_steps + used["rollout_env_steps"], used,
                            work / f"round{k}"))
        result["paired"] = paired(args, reports)
        write_result(args.name, result, prov)
        plot(result, args.name)


def plot(r: dict, name: str) -> None:
    fig, ax = new_axes()
    draw_rounds(ax, r["points"], "#228833", "self-imitation rounds (round 0: SFT)")
    for c in r.get("control", []):
        ax.scatter([c["real_env_steps"]], [100 * c["success_rate"]], color="#999999", marker="x", zorder=3,
                   label="control: as many rounds of cloning on the demonstrations alone" if c["round"] == 1 else None)
        ax.annotate(f"{c['round']} round(s), p={c['vs_sft']['p_value']:.2g}", (c["real_env_steps"], 100 * c["success_rate"]),
                    textcoords="offset points", xytext=(6, 2), fontsize=7, color="#666666")
    finish_axes(fig, ax, r["tasks"], "Behaviour cloning on the policy's own successes, from one SFT checkpoint", name)


def new_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4), dpi=120)


def draw_rounds(ax, pts: list[dict], color: str, label: str, label_dy: int = -12) -> None:
    """Success against real env steps over the rounds (round 0: SFT), each round's p against SFT."""
    ax.plot([p["real_env_steps"] for p in pts], [100 * p["success_rate"] for p in pts], color=color, marker="o",
            label=label)
    for p in pts[1:]:
        ax.annotate(f"p={p['vs_sft']['p_value']:.2g}", (p["real_env_steps"], 100 * p["success_rate"]),
                    textcoords="offset points", xytext=(4, label_dy), fontsize=7, color=color)


def finish_axes(fig, ax, tasks: list[int], title: str, name: str) -> None:
    ax.set_xlabel("real env steps (demonstrations + rollouts, failures included)")
    ax.set_ylabel(f"LIBERO success, tasks {','.join(map(str, tasks))} (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
