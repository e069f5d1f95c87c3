"""``mbpo-ray``: the command line.

Every command takes ``--config FILE`` and dotted overrides such as ``--env.image_size=64``;
explicit flags (``--suite``, ``--episodes``, ...) are shorthands for the same fields.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mbpo_ray import cli_data, cli_loop
from mbpo_ray.config import Config, ConfigError, build_config, parse_overrides
from mbpo_ray.connect import use_loopback
from mbpo_ray.envs.libero_env import EnvError
from mbpo_ray.replay.schema import ReplayError

# flag name -> dotted config field
SHORTHANDS = {
    "suite": "env.suite",
    "task": "env.task_id",
    "image_size": "env.image_size",
    "chunk_size": "env.chunk_size",
    "episodes": "collect.episodes",
    "workers": "collect.workers",
    "seed": "collect.seed",
    "noise": "expert.noise_std",
}
# the policy commands' flags (they name other fields than collect's flags of the same name)
EVAL_SHORTHANDS = {
    "suite": "eval.suite",
    "tasks": "eval.tasks",
    "episodes_per_task": "eval.episodes_per_task",
    "workers": "eval.workers",
    "seed": "eval.seed",
    "videos": "eval.videos",
    "sample": "eval.sample",
}
SFT_SHORTHANDS = {"suite": "env.suite", "tasks": "sft.tasks", "demos_per_task": "sft.demos_per_task",
                  "rollouts_per_task": "sft.rollouts_per_task",
                  "steps": "sft.steps", "seed": "sft.seed"}


def _overrides(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """What this command line sets explicitly: dotted overrides and shorthand flags."""
    overrides: dict[str, Any] = parse_overrides(extra)
    for flag, dotted in getattr(args, "shorthands", SHORTHANDS).items():
        value = getattr(args, flag, None)
        if value is not None:
            section, name = dotted.split(".")
            overrides.setdefault(section, {})[name] = value
    return overrides


def _config(args: argparse.Namespace, extra: list[str]) -> Config:
    return build_config(getattr(args, "config", None), _overrides(args, extra))


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True, file=sys.stderr)


# ----------------------------------------------------------------------------- collect


def collect(cfg: Config, uri: str) -> list[dict]:
    import dataclasses

    from mbpo_ray.collect import collect_local, store_spec
    from mbpo_ray.replay import ReplayStore

    store = ReplayStore.create(uri, store_spec(cfg))
    bar = _progress(cfg.collect.episodes, f"collect {cfg.env.suite}/{cfg.env.task_id}")
    wins = [0]

    def on_episode(r) -> None:
        r = r if isinstance(r, dict) else dataclasses.asdict(r)
        wins[0] += r["success"]
        bar.update(1)
        bar.set_postfix(expert_success=f"{wins[0]}/{bar.n}")

    try:
        if cfg.collect.workers > 1:
            from actors.env_runner import collect_parallel

            results = collect_parallel(cfg, uri, on_episode)
        else:
            results = [dataclasses.asdict(r) for r in collect_local(cfg, store, on_episode)]
    finally:
        bar.close()
    return results


def cmd_collect(args, extra) -> int:
    cfg = _config(args, extra)
    t0 = time.time()
    results = collect(cfg, args.out)
    kept = sum(r["episode_id"] is not None for r in results)
    wins = sum(r["success"] for r in results)
    print(f"expert solved {wins}/{len(results)} episodes; stored {kept} in {args.out} "
          f"({time.time() - t0:.0f} s)")
    return 0


# ----------------------------------------------------------------------------- import / replay


def cmd_import(args, extra) -> int:
    from mbpo_ray.replay import ReplayStore, StoreSpec
    from mbpo_ray.replay.libero_hdf5 import iter_hdf5_episodes, resolve_task

    for path in args.files:
        if not Path(path).is_file():
            raise ReplayError(f"{path}: no such file")
    tasks = [resolve_task(path, args.suite, args.task) for path in args.files]  # every file's task, before writing
    store = ReplayStore.create(args.out, StoreSpec(image_size=args.image_size, chunk_size=args.chunk_size))
    n = 0
    bar = _progress(None, "import")
    for path, (suite, task) in zip(args.files, tasks, strict=True):
        for batch in iter_hdf5_episodes(store, path, suite, task):
            store.append(batch)
            n += 1
            bar.update(1)
    bar.close()
    print(f"imported {n} episodes from {len(args.files)} file(s) into {args.out}")
    return 0


def format_info(info: dict[str, Any]) -> str:
    lines = [
        f"store         {info['uri']}",
        f"episodes      {info['episodes']}",
        f"transitions   {info['transitions']} chunks of {info['chunk_size']} actions "
        f"({info['env_steps']} env steps)",
        f"success rate  {info['success_rate']:.1%}",
        f"images        {info['image_size']}x{info['image_size']} head + wrist",
        f"bytes         {info['bytes'] / 2**20:.1f} MiB in {info['files']} file(s)",
        "sources       " + ", ".join(f"{k}: {v}" for k, v in info["sources"].items()),
        "tasks         " + ", ".join(f"{k}: {v} ep" for k, v in info["tasks"].items()),
    ]
    return "\n".join(lines)


def cmd_replay_info(args, extra) -> int:
    from mbpo_ray.replay import ReplayStore

    info = ReplayStore.open(args.store).info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_replay_show(args, extra) -> int:
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.replay.viz import save_episode_strip

    store = ReplayStore.open(args.store)
    out = save_episode_strip(store, args.episode, args.out, max_frames=args.max_frames, scale=args.scale)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- world model


def cmd_train_tokenizer(args, extra) -> int:
    import numpy as np
    import pyarrow as pa
    from tqdm import tqdm

    from mbpo_ray.replay import ReplayStore, frames
    from mbpo_ray.world_model.tokenizer import PRESETS, ImageTokenizer, psnr, resize_frames

    cfg = _config(args, extra).tokenizer
    _check_new_dir(args.out)
    store = ReplayStore.open(args.store)
    views = []
    for batch in store.iter_batches(["head", "wrist"]):
        t = pa.Table.from_batches([batch])
        views += [frames(t, "head", store.spec.image_size), frames(t, "wrist", store.spec.image_size)]
    if not views:
        raise ReplayError(f"{args.store} holds no frames: collect data first")
    data = np.concatenate(views)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    n_test = max(1, len(data) // 10)
    test, train = data[order[:n_test]], data[order[n_test:]]
    tok = ImageTokenizer(PRESETS[cfg.preset])
    bar = tqdm(tok.train(train, cfg.steps, cfg.batch_size, cfg.lr), total=cfg.steps, desc="train tokenizer",
               unit="step", dynamic_ncols=True, file=sys.stderr)
    for m in bar:
        if m["step"] % 10 == 0:
            bar.set_postfix(mse=f"{m['recon_mse']:.4f}", codes=m["codes_used"])
    rec = tok.decode(tok.encode(test))
    score = float(psnr(rec, resize_frames(test, tok.preset.image_size)).mean())
    tok.save(args.out, {"heldout_psnr": score, "train_frames": len(train), "heldout_frames": n_test,
                        "steps": cfg.steps})
    print(f"tokenizer ({cfg.preset}: {tok.preset.codes_per_view} codes/view, {tok.preset.codebook_size} "
          f"codebook) saved to {args.out}; held-out reconstruction PSNR {score:.2f} dB")
    return 0


def cmd_train_world_model(args, extra) -> int:
    from mbpo_ray.resume import config_on_top
    from mbpo_ray.world_model.train import train_world_model

    saved = Path(args.out) / "train_config.json"
    if args.resume and saved.is_file():  # the settings it was trained with; this command's flags change only what they name
        cfg, changed = config_on_top({"world_model": json.loads(saved.read_text())}, getattr(args, "config", None),
                                     _overrides(args, extra))
        print(f"resuming {args.out} with the world-model config it was trained with"
              + (f"; changed by this command: {', '.join(changed)}" if changed else ""), file=sys.stderr)
    else:
        cfg = _config(args, extra)
    result = train_world_model(args.store, args.tokenizer, args.out, cfg.world_model, seed=cfg.collect.seed,
                               resume=args.resume)
    print(f"world model ({result['params'] / 1e6:.1f} M parameters, {result['steps']} steps, "
          f"{result['train_minutes']:.1f} min) saved to {args.out}")
    return 0


def cmd_train_frame_reward(args, extra) -> int:
    from mbpo_ray.world_model.frame_reward import FrameRewardConfig, fit_frame_reward

    if args.steps < 1:
        raise ConfigError(f"--steps={args.steps}: the frame reward needs at least 1 training step")
    cfg = FrameRewardConfig(steps=args.steps, seed=args.seed, imagined=args.imagined, engine=args.engine,
                            keep_pixels=args.keep_pixels)
    model = fit_frame_reward(args.checkpoint, args.store, cfg)
    m = model.meta
    print(f"frame reward: validation F1 {m['val_f1']:.3f} ({m['val_positives']} successes in {m['val_observations']} "
          f"observations), step {m['best_step']}, {m['train_minutes']:.1f} min; saved to {args.checkpoint}/reward")
    return 0


def cmd_eval_world_model(args, extra) -> int:
    from mbpo_ray.world_model.evaluate import evaluate_world_model

    report = evaluate_world_model(args.checkpoint, args.store, args.out, engine=args.engine, policy_dir=args.policy,
                                  temperature=args.temperature, keep_pixels=args.keep_pixels)
    for view in ("head", "wrist"):
        r = report[view]
        print(f"{view:6s} PSNR {r['psnr']:.2f} dB (copy-current-frame {r['psnr_copy_baseline']:.2f}, all-keep "
              f"{r['psnr_copy_codes']:.2f}, tokenizer ceiling {r['psnr_codes_ceiling']:.2f}), "
              f"SSIM {r['ssim']:.3f} (copy {r['ssim_copy_baseline']:.3f})")
    r = report["reward"]
    print(f"reward accuracy {r['accuracy']:.3f} (majority class {r['majority_baseline']:.3f}), F1 {r['f1']:.3f}")
    for name, block in (("greedy", report), (f"temperature {report['temperature']:g}", report["sampled"])):
        cf = ", ".join(f"{k} {v['f1']:.2f}" for k, v in block["counterfactual"].items())
        sens = ", ".join(f"{v} {s['psnr_recorded']:.2f} vs {s['psnr_other']:.2f} dB"
                         for v, s in block["action_sensitivity"].items())
        print(f"{name}: reward F1 under counterfactual actions: {cf}; recorded vs other-step actions: {sens}")
        for source, b in block["by_source"].items():
            sens = ", ".join(f"{v} {s['psnr_recorded']:.2f} vs {s['psnr_other']:.2f} dB"
                             for v, s in b["action_sensitivity"].items())
            print(f"  {source}: reward F1 {b['reward']['f1']:.2f}; recorded vs other-step actions: {sens}")
    print(f"report and grid in {args.out}")
    return 0


# ----------------------------------------------------------------------------- policy


def cmd_sft(args, extra) -> int:
    from mbpo_ray.policy.sft import train_sft

    cfg = _config(args, extra)
    r = train_sft(args.store, args.out, cfg, resume=args.resume, frame_codec=args.frame_codec, init=args.init)
    demos, rollouts = sum(r["demos"].values()), sum(r["rollouts"].values())
    print(f"policy ({r['params'] / 1e6:.1f} M parameters) trained {r['steps']} steps on {demos} demonstrations "
          f"and {rollouts} successful policy rollouts "
          f"of {len(r['demos'])} task(s) ({r['steps_per_s']:.2f} steps/s, {r['train_minutes']:.1f} min); "
          f"saved to {args.out}")
    return 0


def cmd_eval(args, extra) -> int:
    from mbpo_ray.policy import read_policy_meta

    cfg = _config(args, extra)
    read_policy_meta(args.checkpoint)  # a clear error before Ray starts
    if args.frame_codec:  # the same weights, every frame seen through the codec
        from mbpo_ray.policy import with_frame_codec

        _check_new_dir(args.out)
        args.checkpoint = with_frame_codec(args.checkpoint, args.frame_codec, Path(args.out) / "policy_with_codec")
    ec = cfg.eval
    bar = _progress(len(ec.task_ids) * ec.episodes_per_task, f"eval {ec.suite}")
    wins = [0]

    def on_episode(r) -> None:
        wins[0] += r["success"]
        bar.update(1)
        bar.set_postfix(success=f"{wins[0]}/{bar.n}")

    try:
        from actors.env_runner import evaluate_checkpoint

        if args.to_store:
            from mbpo_ray.replay import ReplayStore

            ReplayStore.open(args.to_store)  # a clear error before any episode runs
        report = evaluate_checkpoint(args.checkpoint, cfg, args.out, on_episode, to_store=args.to_store)
    finally:
        bar.close()
    for t, r in report["tasks"].items():
        print(f"  task {t}: {100 * r['success_rate']:5.1f}% of {r['episodes']}  {r['instruction']}")
    print(f"overall {100 * report['success_rate']:.1f}% over {report['episodes']} episodes "
          f"({report['seconds_per_episode']:.1f} s/episode with {report['workers']} worker(s)); "
          f"{Path(args.out) / 'eval.json'}")
    return 0


def _check_new_dir(path: str) -> None:
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ConfigError(f"--out {path} exists and is not empty; nothing was overwritten: choose another --out")


# ----------------------------------------------------------------------------- parser


def add_keep_pixels(parser: argparse.ArgumentParser) -> None:
    """``--keep-pixels/--no-keep-pixels`` (``world_model.keep_pixels``, on by default)."""
    parser.add_argument("--keep-pixels", action=argparse.BooleanOptionalAction, default=True, dest="keep_pixels",
                        help="kept patches show the current frame's pixels (world_model.keep_pixels)")


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--config", help="YAML config file (configs/*.yaml); dotted overrides win over it")
    return sp


def add_data_parsers(sub) -> None:
    """collect, import-libero-hdf5, the LeRobot commands, replay info / show."""
    c = with_config(sub.add_parser("collect", help="scripted-expert demonstrations on real LIBERO"))
    c.add_argument("--suite")
    c.add_argument("--task", type=int)
    c.add_argument("--episodes", type=int)
    c.add_argument("--workers", type=int, help="> 1: parallel env-runner Ray actors")
    c.add_argument("--seed", type=int)
    c.add_argument("--noise", type=float, help="expert action noise std")
    c.add_argument("--image-size", type=int, dest="image_size")
    c.add_argument("--out", required=True, help="replay store path or URI (created if missing)")
    c.set_defaults(func=cmd_collect)

    i = sub.add_parser("import-libero-hdf5", help="official LIBERO demo HDF5 files -> replay store")
    i.add_argument("files", nargs="+")
    i.add_argument("--out", required=True)
    i.add_argument("--suite", help="default: from the file name")
    i.add_argument("--task", type=int, help="default: from the file name")
    i.add_argument("--image-size", type=int, default=128, dest="image_size")
    i.add_argument("--chunk-size", type=int, default=10, dest="chunk_size")
    i.set_defaults(func=cmd_import)

    cli_data.add_parsers(sub)

    r = sub.add_parser("replay", help="inspect, merge or diagnose replay stores")
    rsub = r.add_subparsers(dest="replay_command", required=True)
    ri = rsub.add_parser("info", help="episodes, transitions, tasks, success rate, bytes")
    ri.add_argument("store")
    ri.add_argument("--json", action="store_true")
    ri.set_defaults(func=cmd_replay_info)
    rs = rsub.add_parser("show", help="PNG strip of one episode's head and wrist frames")
    rs.add_argument("store")
    rs.add_argument("--episode", default="0", help="position (0-based) or episode id")
    rs.add_argument("--out", required=True)
    rs.add_argument("--max-frames", type=int, default=16, dest="max_frames")
    rs.add_argument("--scale", type=int, default=1)
    rs.set_defaults(func=cmd_replay_show)
    cli_data.add_replay_merge(rsub)
    cli_data.add_replay_outcomes(rsub)


def add_world_model_parsers(sub) -> None:
    """train-tokenizer, train-world-model, train-frame-reward, eval-world-model."""
    t = with_config(sub.add_parser("train-tokenizer", help="VQ image tokenizer on a store's frames"))
    t.add_argument("store")
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_train_tokenizer)

    w = with_config(sub.add_parser("train-world-model", help="the UMM world model on a store's transitions"))
    w.add_argument("store")
    w.add_argument("--tokenizer", required=True, help="folder made by train-tokenizer")
    w.add_argument("--out", required=True, help="checkpoint folder")
    w.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    w.set_defaults(func=cmd_train_world_model)

    fr = sub.add_parser("train-frame-reward", help="a success classifier on a world model's frames "
                        "(world_model.reward_source=frames)")
    fr.add_argument("checkpoint", help="world-model checkpoint (its training episodes and tokenizer are used)")
    fr.add_argument("store")
    fr.add_argument("--steps", type=int, default=2000)
    fr.add_argument("--seed", type=int, default=0)
    fr.add_argument("--imagined", action="store_true",
                    help="also train on the world model's own imagined views of the same transitions")
    fr.add_argument("--engine", default="vllm", choices=["vllm", "hf"], help="the engine that imagines them")
    add_keep_pixels(fr)
    fr.set_defaults(func=cmd_train_frame_reward)

    e = sub.add_parser("eval-world-model", help="quality report on held-out episodes")
    e.add_argument("checkpoint")
    e.add_argument("store")
    e.add_argument("--out", required=True)
    e.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    e.add_argument("--policy", help="a policy checkpoint: also judge the reward under its sampled action tails")
    e.add_argument("--temperature", type=float, default=1.0, help="imagination's sampling temperature (mbpo.temperature)")
    add_keep_pixels(e)
    e.set_defaults(func=cmd_eval_world_model)


def add_policy_parsers(sub) -> None:
    """sft, eval, and the loop: train, run."""
    s = with_config(sub.add_parser("sft", help="behaviour cloning of the policy on a store's demonstrations"))
    s.add_argument("store")
    s.add_argument("--out", required=True, help="checkpoint folder")
    s.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    s.add_argument("--suite", help="suite of the demonstrations (env.suite)")
    s.add_argument("--tasks", help="task ids, e.g. 0-9 (default: every task in the store)")
    s.add_argument("--demos-per-task", type=int, dest="demos_per_task")
    s.add_argument("--rollouts-per-task", type=int, dest="rollouts_per_task",
                   help="also imitate the first N successful policy rollouts per task recorded in the store "
                   "(self-imitation; default 0)")
    s.add_argument("--init", help="a policy checkpoint to continue from (its bins and architecture) instead of a fresh "
                   "policy")
    s.add_argument("--steps", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--frame-codec", dest="frame_codec",
                   help="a tokenizer folder: every frame the policy sees round-trips through it (one input domain "
                   "for SFT, imagination and evaluation)")
    s.set_defaults(func=cmd_sft, shorthands=SFT_SHORTHANDS)

    ev = with_config(sub.add_parser("eval", help="success rate of a policy checkpoint on real LIBERO"))
    ev.add_argument("checkpoint", help="folder made by `mbpo-ray sft`")
    ev.add_argument("--suite")
    ev.add_argument("--tasks", help="task ids, e.g. 0-9 or 0,3,5-7")
    ev.add_argument("--episodes-per-task", type=int, dest="episodes_per_task", help="init states 0..n-1")
    ev.add_argument("--workers", type=int, help="parallel env-runner Ray actors")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--videos", type=int, help="episodes written as GIFs")
    ev.add_argument("--sample", action="store_true", default=None, help="sample actions (default: greedy)")
    ev.add_argument("--out", required=True, help="folder for eval.json and the GIFs")
    ev.add_argument("--frame-codec", dest="frame_codec",
                    help="evaluate the checkpoint with every frame round-tripped through this tokenizer folder")
    ev.add_argument("--to-store", dest="to_store",
                    help="also append every episode (failures too) to this replay store as a policy rollout")
    ev.set_defaults(func=cmd_eval, shorthands=EVAL_SHORTHANDS)

    tr = with_config(sub.add_parser("train", help="the distributed VLA-MBPO loop (world model + PPO + real LIBERO)"))
    tr.add_argument("--policy", help="SFT policy checkpoint to start from (`mbpo-ray sft`)")
    tr.add_argument("--world-model", dest="world_model", help="world-model checkpoint (`mbpo-ray train-world-model`)")
    tr.add_argument("--store", help="replay store: start states, and where real rollouts are appended")
    tr.add_argument("--out", help="new run folder")
    tr.add_argument("--resume", help="a run folder to continue from its checkpoint")
    tr.set_defaults(func=cli_loop.cmd_train)

    run = with_config(sub.add_parser("run", help="the main job on the embedded default config"))
    run.set_defaults(func=cli_loop.cmd_run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbpo-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    add_data_parsers(sub)
    add_world_model_parsers(sub)
    add_policy_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("RAY_ADDRESS"):  # before any command imports ray
        use_loopback()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (config overrides look like --env.suite=NAME)")
    try:
        return args.func(args, extra)
    except (ConfigError, ReplayError, EnvError, FileNotFoundError, FileExistsError) as exc:
        print(f"mbpo-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mbpo-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
