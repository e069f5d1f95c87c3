"""``mbpo-ray train`` and ``mbpo-ray run``: the commands that start the VLA-MBPO loop (the rest of the
command line is ``mbpo_ray/cli.py``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mbpo_ray.config import ConfigError
from mbpo_ray.connect import connect_ray

# ----------------------------------------------------------------------------- MBPO


def cmd_train(args, extra) -> int:
    """The distributed VLA-MBPO loop (``mbpo_ray/mbpo.py``) on the connected or a local Ray cluster."""
    from tqdm import tqdm

    from mbpo_ray.cli import _config, _overrides
    from mbpo_ray.mbpo import train_mbpo
    from mbpo_ray.resume import recover_checkpoint, resume_config

    out = args.resume or args.out
    if not out:
        raise ConfigError("give --out DIR for a new run, or --resume DIR to continue one")
    if args.resume:  # the run's own config; this command's flags change only what they name
        recover_checkpoint(Path(out))
        if not (Path(out) / "checkpoint" / "state.json").is_file():
            raise FileNotFoundError(f"{out} has no checkpoint to resume (no checkpoint/state.json)")
        cfg, changed = resume_config(Path(out), getattr(args, "config", None), _overrides(args, extra))
        print(f"resuming {out} with the config it was started with"
              + (f"; changed by this command: {', '.join(changed)}" if changed else ""), file=sys.stderr)
    else:
        cfg = _config(args, extra)
        needed = [("--policy", args.policy), ("--store", args.store)]
        if cfg.mbpo.mode == "mbpo":  # online RL and simulator branches run in LIBERO, no world model
            needed.append(("--world-model", args.world_model))
        for flag, path in needed:
            if not path:
                raise ConfigError(f"{flag} is required for a new run")
    connect_ray(os.cpu_count() or 1)
    bar = tqdm(total=cfg.mbpo.iterations, desc="VLA-MBPO", unit="it", dynamic_ncols=True, file=sys.stderr)

    def progress(log: dict) -> None:
        bar.n = log["iteration"]
        bar.set_postfix({k.split("/")[-1]: f"{log[k]:.3g}" for k in ("imagine/reward_mean", "ppo/approx_kl",
                                                                     "eval/success") if k in log})
        bar.refresh()

    r = train_mbpo(cfg, args.policy, args.world_model, args.store, out, resume=bool(args.resume), progress=progress)
    bar.close()
    ev = f"; eval success {r['eval/success']:.2f} over {r['eval/episodes']} episodes" if "eval/success" in r else ""
    print(f"{r.get('iteration', 0)} iterations; policy version {r.get('policy_version')}{ev}")
    print(f"TensorBoard: tensorboard --logdir {Path(out) / 'tb'}; checkpoint: {Path(out) / 'checkpoint'}")
    return 0


# ----------------------------------------------------------------------------- run


def cmd_run(args, extra) -> int:
    """The whole pipeline on the embedded default config (``make run``), every step a CLI command:
    demonstrations -> tokenizer -> world model -> SFT -> VLA-MBPO on a local Ray cluster -> evaluation."""
    from mbpo_ray.cli import _config, main

    cfg = _config(args, extra)
    rc, run_dir = cfg.run, Path(cfg.cache_dir) / "runs" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    store = str(run_dir / "replay")
    given = ["--config", args.config] if args.config else []
    given += extra
    print(f"run directory: {run_dir}", flush=True)

    def step(title: str, argv: list[str]) -> None:
        print(f"\n== {title}: mbpo-ray {' '.join(argv)}", flush=True)
        code = main(argv)
        if code:
            raise RuntimeError(f"`mbpo-ray {argv[0]}` failed with exit code {code}; the run so far is in {run_dir}")

    for task in cfg.mbpo.task_ids:
        step(f"demonstrations, task {task}", ["collect", "--suite", cfg.env.suite, "--task", str(task), "--episodes",
                                              str(rc.episodes_per_task), "--out", store, *given])
    step("replay store", ["replay", "show", store, "--episode", "0", "--out", str(run_dir / "episode0.png")])
    step("image tokenizer", ["train-tokenizer", store, "--out", str(run_dir / "tokenizer"), *given,
                             f"--tokenizer.steps={rc.tokenizer_steps}"])
    step("world model", ["train-world-model", store, "--tokenizer", str(run_dir / "tokenizer"), "--out",
                         str(run_dir / "world_model"), *given, f"--world_model.steps={rc.world_model_steps}",
                         f"--world_model.checkpoint_every={rc.world_model_steps}"])
    if cfg.world_model.reward_source != "token":
        step("frame reward", ["train-frame-reward", str(run_dir / "world_model"), store])
    step("behaviour cloning", ["sft", store, "--out", str(run_dir / "sft"), "--tasks", cfg.mbpo.tasks, *given,
                               f"--sft.steps={rc.sft_steps}", f"--sft.demos_per_task={rc.episodes_per_task}"])
    step("VLA-MBPO", ["train", "--policy", str(run_dir / "sft"), "--world-model", str(run_dir / "world_model"),
                      "--store", store, "--out", str(run_dir / "mbpo"), *given])
    print(f"\nall done in {run_dir}: episode0.png, world_model/, sft/, mbpo/ (tensorboard --logdir {run_dir / 'mbpo' / 'tb'})")
    return 0
