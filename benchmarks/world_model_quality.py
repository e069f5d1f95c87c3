"""Train and judge the world model on scripted demonstrations, end to end through the CLI.

    python benchmarks/world_model_quality.py --store STORE --work DIR [--tasks 0-3 --episodes 15]
        [--tokenizer DIR] [--policy SFT_CKPT] [--temperature 1.0] [--frame-reward [--frame-reward-imagined]]
        [--eval-only | --resume MINUTES]
        [--section.field=value ...]

Collects demonstrations into STORE if it does not exist (``mbpo-ray collect`` per task), then runs
``train-tokenizer``, ``train-world-model`` and ``eval-world-model`` (vLLM engine) and copies the
report (``world_model_quality.json``: one-step quality, the counterfactual checks greedy and at
``--temperature``, metrics by data source, uncertainty vs error; with ``--policy`` also the reward
under that policy's sampled actions) and the branch grid PNG into benchmarks/results/. With
``--tokenizer`` an already trained tokenizer is used instead of training one (the JSON names it);
``--eval-only`` reports on the world model an earlier run of this command trained in WORK.
``--frame-reward`` also trains the frame reward (``mbpo-ray train-frame-reward``, with
``--frame-reward-imagined`` on the imagined views too) before the report, which then judges its
answers too; with ``--eval-only`` a frame reward already in WORK/wm is kept. ``--resume MINUTES``
trains WORK/wm further (``train-world-model --resume`` with ``world_model.max_minutes`` = MINUTES)
before the report; every training run's minutes and command are kept in WORK/train_minutes.json and
the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import RESULTS, no_home, provenance, write_result  # noqa: E402
from mbpo_ray.cli import main as cli  # noqa: E402


def run(argv: list[str]) -> None:
    print("$ mbpo-ray " + " ".join(argv), flush=True)
    t0 = time.time()
    code = cli(argv)
    if code != 0:
        raise SystemExit(f"mbpo-ray {argv[0]} failed with exit code {code}")
    print(f"  ({(time.time() - t0) / 60:.1f} min)", flush=True)


def train(work: Path, argv: list[str], commit: str) -> None:
    """Run a training command and add its minutes (and the command) to WORK/train_minutes.json."""
    t0 = time.time()
    run(argv)
    path = work / "train_minutes.json"
    log = json.loads(path.read_text()) if path.exists() and "--resume" in argv else {"train_minutes": 0.0}
    minutes = round((time.time() - t0) / 60, 1)
    log["runs"] = [*log.get("runs", []), {"command": no_home("mbpo-ray " + " ".join(argv)), "minutes": minutes,
                                          "commit": commit}]
    log["train_minutes"] = round(log["train_minutes"] + minutes, 1)
    path.write_text(json.dumps(log, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True)
    ap.add_argument("--work", required=True, help="folder for the tokenizer, checkpoint and report (new)")
    ap.add_argument("--tasks", default="0-3", help="libero_spatial tasks to collect when the store is missing")
    ap.add_argument("--episodes", type=int, default=15, help="episodes per task when collecting")
    ap.add_argument("--tokenizer", help="a train-tokenizer folder to use instead of training a new one")
    ap.add_argument("--policy", help="a policy checkpoint: the report also judges the reward under its sampled actions")
    ap.add_argument("--temperature", default="1.0", help="imagination's sampling temperature (mbpo.temperature)")
    ap.add_argument("--frame-reward", action="store_true", dest="frame_reward",
                    help="train the frame reward (train-frame-reward) after the world model")
    ap.add_argument("--frame-reward-imagined", action="store_true", dest="frame_reward_imagined",
                    help="the frame reward also trains on the world model's imagined views (--imagined)")
    ap.add_argument("--eval-only", action="store_true", help="report on WORK/wm as trained by an earlier run")
    ap.add_argument("--resume", type=float, metavar="MINUTES",
                    help="train WORK/wm (from an earlier run) for MINUTES more, then report")
    ap.add_argument("--name", default="world_model_quality",
                    help="result name: benchmarks/results/NAME.json (and the branch grid NAME.png)")
    ap.add_argument("overrides", nargs="*", help="--section.field=value passed to the training commands")
    args, extra = ap.parse_known_args()
    prov = provenance()  # the commit the run starts from (the tree may change while it runs)
    overrides = args.overrides + extra
    work = Path(args.work)
    if not (Path(args.store) / "store.json").exists():
        lo, hi = (int(x) for x in args.tasks.split("-"))
        for task in range(lo, hi + 1):
            run(["collect", "--suite", "libero_spatial", "--task", str(task), "--episodes", str(args.episodes),
                 "--workers", "2", "--out", args.store])
    tokenizer = Path(args.tokenizer) if args.tokenizer else work / "tokenizer"
    if args.resume is not None:
        train(work, ["train-world-model", args.store, "--tokenizer", str(tokenizer), "--out", str(work / "wm"),
                     "--resume", *overrides, f"--world_model.max_minutes={args.resume}"], prov["commit"])
    elif not args.eval_only:
        if not args.tokenizer:
            run(["train-tokenizer", args.store, "--out", str(tokenizer), *overrides])
        train(work, ["train-world-model", args.store, "--tokenizer", str(tokenizer), "--out", str(work / "wm"),
                     *overrides], prov["commit"])
    if args.frame_reward and (not args.eval_only or not (work / "wm" / "reward").exists()):
        run(["train-frame-reward", str(work / "wm"), args.store, *(["--imagined"] if args.frame_reward_imagined else [])])
    minutes = json.loads((work / "train_minutes.json").read_text())
    policy = ["--policy", args.policy] if args.policy else []
    shutil.rmtree(work / "report", ignore_errors=True)
    run(["eval-world-model", str(work / "wm"), args.store, "--out", str(work / "report"), "--engine", "vllm", *policy,
         "--temperature", args.temperature])
    report = json.loads((work / "report" / "world_model_quality.json").read_text())
    tok = json.loads((tokenizer / "tokenizer.json").read_text())
    from mbpo_ray.replay import ReplayStore

    info = ReplayStore.open(args.store).info()
    report.pop("grid", None)
    grid = "world_model_branch_grid" if args.name == "world_model_quality" else args.name
    write_result(args.name, {
        **report,
        "train_minutes": minutes["train_minutes"],
        "train_runs": [{**r, "command": no_home(r["command"])} for r in minutes.get("runs", [])],
        "train_steps": json.loads((work / "wm" / "state" / "step.json").read_text())["step"],
        "best_step": json.loads((work / "wm" / "best.json").read_text())["step"],
        "tokenizer": {"preset": tok["preset"], **tok["metrics"],
                      "trained_here": not args.tokenizer},
        "data": {k: info[k] for k in ("episodes", "transitions", "tasks", "sources") if k in info},
        "grid_png": f"benchmarks/results/{grid}.png",
        "note": "discrete-token UMM (Llama-style, trained from scratch on this machine), not the paper's BAGEL-7B",
    }, prov)
    shutil.copy(work / "report" / "branch_grid.png", RESULTS / f"{grid}.png")


if __name__ == "__main__":
    main()
