"""Crash safety under fire: a VLA-MBPO run killed many times, against the same run uninterrupted.

    python benchmarks/chaos.py --work DIR [--kills 20] [--iterations 10] [--seed 0]
        [--policy SFT --world-model WM --store STORE]

On a local Ray cluster (``ray start --head``), ``mbpo-ray train`` runs ``--iterations`` iterations with
real data every iteration, world-model finetuning every iteration, vLLM engines and
``mbpo.max_staleness=1`` (the next batch imagined while the learner updates). A controller sends
``--kills`` SIGKILLs at random moments (after the first checkpoint) to world-model replicas, env
runners, the world-model learner, learner ranks and the driver; whenever the driver is gone, the run is
continued with ``mbpo-ray train --resume``, as a user would. The same run, uninterrupted, is the
reference. Both start from their own copy of the store. ``benchmarks/results/chaos.json`` records the
kills, the resumes, whether the final policy and world-model weights are identical, and the real
episodes lost or stored twice and the metric rows logged twice. Without ``--policy`` etc. tiny inputs
are made first with the CLI (2 expert demonstrations, a small tokenizer, world model and SFT policy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import bar_chart, write_result

KINDS = {"wm_worker": "WorldModelWorker", "env_runner": "EnvRunner", "wm_learner": "WorldModelLearner",
         "learner": "PolicyLearner", "driver": None}
RUN = ["--mbpo.tasks=0", "--mbpo.branches=8", "--mbpo.n_chunks=2", "--mbpo.learners=2", "--mbpo.max_staleness=1",
       "--mbpo.real_every=1", "--mbpo.real_episodes=1", "--env.max_steps=20", "--mbpo.wm_finetune_every=1",
       "--mbpo.wm_finetune_steps=2", "--mbpo.checkpoint_every=1", "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=8",
       "--mbpo.updates_per_batch=2", "--mbpo.wm_workers_min=1", "--mbpo.wm_workers_max=1", "--mbpo.env_runners=1",
       "--world_model.engine=vllm", "--mbpo.worker_cpus=0.5", "--mbpo.learner_cpus=0.5", "--mbpo.runner_cpus=0.5",
       "--mbpo.wm_learner_cpus=0.5"]


def cli(*argv: str, log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "mbpo_ray.cli", *argv], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def must(*argv: str, log: Path) -> None:
    if cli(*argv, log=log).wait() != 0:
        raise SystemExit(f"`mbpo-ray {' '.join(argv)}` failed; see {log}")


def tiny_inputs(work: Path) -> tuple[str, str, str]:
    """Demonstrations, tokenizer, world model and SFT policy, small enough for a CPU."""
    d, log = work / "inputs", work / "inputs.log"
    if not (d / "sft" / "policy.json").is_file():
        shutil.rmtree(d, ignore_errors=True)
        must("collect", "--suite", "libero_spatial", "--task", "0", "--episodes", "2", "--image-size", "32",
             "--out", str(d / "store"), log=log)
        must("train-tokenizer", str(d / "store"), "--out", str(d / "tokenizer"), "--tokenizer.steps=20", log=log)
        must("train-world-model", str(d / "store"), "--tokenizer", str(d / "tokenizer"), "--out", str(d / "wm"),
             "--world_model.steps=5", "--world_model.checkpoint_every=5", "--world_model.hidden_size=64",
             "--world_model.num_layers=1", "--world_model.num_heads=2", "--world_model.intermediate_size=64",
             log=log)
        must("sft", str(d / "store"), "--out", str(d / "sft"), "--tasks", "0", "--sft.steps=20", log=log)
    return str(d / "sft"), str(d / "wm"), str(d / "store")


def start_cluster() -> str:
    """A local cluster held by this process (gone when it exits); the drivers join it by address."""
    from mbpo_ray.connect import local_ray

    local_ray(8)
    import ray

    return ray.get_runtime_context().gcs_address


def kill_plan(rng: np.random.Generator, n: int) -> list[str]:
    """At least 3 kills of every kind; the rest on replicas and runners (no resume needed)."""
    plan = [k for k in KINDS for _ in range(3)]
    plan += list(rng.choice(["wm_worker", "env_runner"], size=max(0, n - len(plan))))
    rng.shuffle(plan)
    return plan


def alive_pids(class_name: str, since_ms: float) -> list[int]:
    """PIDs of the live actors of ``class_name`` started since ``since_ms`` (the current driver's)."""
    from ray._private.state import actors

    return [a["Pid"] for a in actors().values()
            if a["State"] == "ALIVE" and a["ActorClassName"] == class_name and a["StartTime"] >= since_ms]


def chaos_run(train: list[str], out: Path, address: str, plan: list[str], rng, log: Path) -> dict:
    """The run under ``plan``'s kills; resumed whenever its driver is gone; (kills, resumes)."""
    env = {"RAY_ADDRESS": address}
    proc, kills, resumes = cli(*train, "--out", str(out), log=log, env=env), Counter(), 0
    since = time.time() * 1000
    while True:
        if proc.poll() is not None:
            if proc.returncode == 0 and not plan:
                break
            if proc.returncode == 0:  # finished before every kill landed: nothing left to kill
                print(f"the run ended with {len(plan)} kills not sent", flush=True)
                break
            resumes += 1
            if resumes > sum(kills.values()) + 3:  # failing by itself, not from a kill
                raise SystemExit(f"the run keeps failing without being killed; see {log}")
            proc, since = cli("train", "--resume", str(out), log=log, env=env), time.time() * 1000
        if not plan:
            time.sleep(1.0)
            continue
        time.sleep(float(rng.uniform(2.0, 12.0)))
        if not (out / "checkpoint" / "state.json").is_file() or proc.poll() is not None:
            continue
        kind = plan[0]
        if kind == "driver":
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        else:
            pids = alive_pids(KINDS[kind], since)
            if not pids:
                continue
            os.kill(int(rng.choice(pids)), signal.SIGKILL)
        kills[plan.pop(0)] += 1
        print(f"{time.strftime('%H:%M:%S')} killed {kind} ({sum(kills.values())} kills, {resumes} resumes)",
              flush=True)
    return {"kills": {k: kills[k] for k in KINDS}, "resumes": resumes}


def compare(whole: Path, chaos: Path, stores: dict[Path, str], iterations: int) -> dict:
    from safetensors.torch import load_file

    from mbpo_ray.replay import ReplayStore

    def same(rel: str) -> bool:
        a, b = load_file(str(whole / rel)), load_file(str(chaos / rel))
        return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)

    rid = json.loads((chaos / "run.json").read_text())["run_id"]
    ids = [e.episode_id for e in ReplayStore.open(stores[chaos]).episodes if e.episode_id.startswith(rid)]
    expected = {f"{rid}-real{i}-j0" for i in range(1, iterations + 1)}
    rows = [json.loads(x)["iteration"] for x in (chaos / "metrics.jsonl").read_text().splitlines()]
    start = load_file(str(Path(json.loads((chaos / "run.json").read_text())["policy"]) / "model.safetensors"))
    end = load_file(str(chaos / "checkpoint" / "policy" / "model.safetensors"))
    return {"final_weights_identical": same("checkpoint/policy/model.safetensors"),
            "policy_moved_from_start": any(not bool((start[k] == end[k]).all()) for k in end),  # not trivially equal
            "final_world_model_identical": same("checkpoint/world_model/model/model.safetensors"),
            "episodes_lost": len(expected - set(ids)), "episodes_duplicated": len(ids) - len(set(ids)),
            "episodes_unexpected": len(set(ids) - expected), "metric_rows_duplicated": len(rows) - len(set(rows)),
            "iterations_logged": sorted(set(rows)) == list(range(1, iterations + 1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a new folder for the inputs, both runs and their logs")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy")
    ap.add_argument("--world-model", dest="world_model")
    ap.add_argument("--store")
    args = ap.parse_args()
    if args.kills < 3 * len(KINDS):
        raise SystemExit(f"--kills {args.kills}: at least {3 * len(KINDS)} (3 of every kind)")
    work = Path(args.work)
    if (work / "whole").exists() or (work / "chaos").exists():
        raise SystemExit(f"{work} already holds runs: choose a new --work; nothing was overwritten")
    work.mkdir(parents=True, exist_ok=True)
    policy, wm, store = (args.policy, args.world_model, args.store) if args.store else tiny_inputs(work)
    whole, chaos = work / "whole", work / "chaos"
    stores = {r: str(work / f"store_{r.name}") for r in (whole, chaos)}
    for s in stores.values():
        shutil.copytree(store, s)
    import ray

    address = start_cluster()
    try:
        base = ["train", "--policy", policy, "--world-model", wm, f"--mbpo.iterations={args.iterations}",
                f"--mbpo.seed={args.seed}", *RUN]
        t0 = time.perf_counter()
        if cli(*base, "--store", stores[whole], "--out", str(whole), log=work / "whole.log",
               env={"RAY_ADDRESS": address}).wait() != 0:
            raise SystemExit(f"the uninterrupted run failed; see {work / 'whole.log'}")
        whole_s = time.perf_counter() - t0
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        fired = chaos_run([*base, "--store", stores[chaos]], chaos, address, kill_plan(rng, args.kills), rng,
                          work / "chaos.log")
        chaos_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    result = {**fired, **compare(whole, chaos, stores, args.iterations), "iterations": args.iterations,
              "seconds": {"uninterrupted": round(whole_s, 1), "chaos": round(chaos_s, 1)}, "settings": RUN}
    write_result("chaos", result)
    bar_chart("chaos", list(result["kills"]), [float(v) for v in result["kills"].values()], "SIGKILLs",
              f"{sum(result['kills'].values())} kills, {result['resumes']} resumes: final weights identical "
              f"{result['final_weights_identical']}, episodes lost {result['episodes_lost']}, "
              f"duplicated {result['episodes_duplicated']}")


if __name__ == "__main__":
    main()
