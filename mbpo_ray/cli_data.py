"""``mbpo-ray import-lerobot`` and ``mbpo-ray export-lerobot``: LeRobot datasets in and out of a
replay store; ``mbpo-ray replay merge``; ``mbpo-ray branches``: sibling branches run in LIBERO into a
store (the rest of the command line is ``mbpo_ray/cli.py``)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from mbpo_ray.replay.schema import ReplayError


def cmd_import_lerobot(args, extra) -> int:
    """A LeRobot v2.1 / v3.0 dataset -> a replay store. Everything that can be checked is checked before
    a row is written; a new store is written into a temporary folder next to ``--out`` and renamed at
    the end, so a failure leaves none behind (an existing store is appended to, episode by episode)."""
    from mbpo_ray.cli import _check_new_dir, _progress
    from mbpo_ray.replay import ReplayStore, StoreSpec
    from mbpo_ray.replay.lerobot import KeyMap, check_sizes, iter_lerobot_episodes, open_dataset

    if not Path(args.dataset).is_dir():
        raise ReplayError(f"{args.dataset}: no such folder (a LeRobot dataset: meta/info.json, data/, videos/)")
    out = Path(args.out)
    existing = (out / "store.json").is_file()
    if not existing:
        _check_new_dir(args.out)
    ds = open_dataset(args.dataset, KeyMap(args.head_key, args.wrist_key, args.state_key, args.action_key))
    spec = StoreSpec(image_size=args.image_size, chunk_size=args.chunk_size)
    check_sizes(ds, spec)
    print(f"LeRobot {ds.version}: {len(ds.episodes)} episodes at {ds.fps:g} fps; head {ds.keys.head}, "
          f"wrist {ds.keys.wrist}, state {ds.keys.state or '(none)'}, action {ds.keys.action}")
    target = out if existing else out.with_name(f".{out.name}.importing")
    if not existing:
        shutil.rmtree(target, ignore_errors=True)
    try:
        store = ReplayStore.create(str(target), spec)
        bar = _progress(len(ds.episodes), "import")
        for batch in iter_lerobot_episodes(ds, spec, args.suite, not args.assume_failure, args.rotate180):
            store.append(batch)
            bar.update(1)
        bar.close()
        if not existing:
            if out.exists():
                out.rmdir()  # empty, checked above
            target.rename(out)
    except BaseException:
        if not existing:
            shutil.rmtree(target, ignore_errors=True)
        raise
    info = ReplayStore.open(str(out)).info()
    print(f"imported {len(ds.episodes)} episodes into {out} (now {info['episodes']} episodes, "
          f"{info['transitions']} chunks); tasks: " + ", ".join(f"{k}: {v} ep" for k, v in info["tasks"].items()))
    return 0


def cmd_export_lerobot(args, extra) -> int:
    from mbpo_ray.cli import _check_new_dir, _progress
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.replay.lerobot_export import export_lerobot

    _check_new_dir(args.out)
    store = ReplayStore.open(args.store)
    bar = _progress(len(store.episodes), "export")
    try:
        info = export_lerobot(store, args.out, images=args.images, episodes_per_file=args.episodes_per_file,
                              progress=bar)
    except BaseException:
        shutil.rmtree(args.out, ignore_errors=True)
        raise
    bar.close()
    print(f"exported {info['total_episodes']} episodes ({info['total_frames']} rows, one per chunk, "
          f"{info['fps']} fps) as LeRobot v3.0 into {args.out}")
    return 0


def cmd_replay_merge(args, extra) -> int:
    from mbpo_ray.cli import _progress
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.replay.merge import merge_stores

    stores = {s: ReplayStore.open(s) for s in args.sources}
    bar = _progress(sum(len(s.episodes) for s in stores.values()), "merge")
    r = merge_stores(args.out, stores, progress=bar.update, max_episodes=args.max_episodes)
    bar.close()
    print(f"merged {r.episodes} episodes into {args.out} ({r.duplicates} duplicates skipped): "
          + ", ".join(f"{k}: {v}" for k, v in r.by_source.items()))
    return 0


def add_replay_merge(rsub: argparse._SubParsersAction) -> None:
    m = rsub.add_parser("merge", help="several stores -> one new store (an episode id seen before is skipped)")
    m.add_argument("sources", nargs="+", help="stores with one spec, copied in this order")
    m.add_argument("--out", required=True, help="the new store (must not exist)")
    m.add_argument("--max-episodes", type=int, dest="max_episodes",
                   help="copy only the first N episodes (sources in order; a store a run kept appending to, as it was)")
    m.set_defaults(func=cmd_replay_merge)


def cmd_replay_outcomes(args, extra) -> int:
    """How each stored episode ended, measured against its LIBERO goal from its last simulator state."""
    import json

    from mbpo_ray.envs.goal_state import CATEGORIES, episode_outcomes
    from mbpo_ray.replay import ReplayStore

    store = ReplayStore.open(args.store)
    table = episode_outcomes(store, sources=args.source)
    if not table:
        raise ReplayError(f"{args.store} holds no episodes of source {', '.join(args.source)}")
    print(f"{'suite/task':<20}{'source':<8}{'episodes':>9}{'successes':>10}" + "".join(f"{c:>22}" for c in CATEGORIES))
    for row in table:
        print(f"{row['suite'] + '/' + str(row['task_id']):<20}{row['source']:<8}{row['episodes']:>9}"
              f"{row['recorded_successes']:>10}" + "".join(f"{row['ended'][c]:>22}" for c in CATEGORIES))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
        print(f"wrote {args.json}")
    return 0


def add_replay_outcomes(rsub: argparse._SubParsersAction) -> None:
    o = rsub.add_parser("outcomes", help="how each episode ended against its LIBERO goal (goal, on the target "
                        "off centre, lifted, elsewhere), per task and source, from the recorded simulator states")
    o.add_argument("store")
    o.add_argument("--source", nargs="+", default=["demo", "real"], help="episode sources to count")
    o.add_argument("--json", help="also write the table here")
    o.set_defaults(func=cmd_replay_outcomes)


def cmd_branches(args, extra) -> int:
    """``mbpo.group_size`` sampled branches of a policy from each of ``mbpo.branches / group_size``
    stored start states, run in LIBERO and appended to the store (:mod:`mbpo_ray.rl.siblings`)."""
    from mbpo_ray.cli import _config, _progress
    from mbpo_ray.connect import connect_ray
    from mbpo_ray.policy import read_policy_meta
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.rl.siblings import sibling_jobs, summarize

    cfg = _config(args, extra)
    read_policy_meta(args.policy)  # a clear error before Ray starts
    store = ReplayStore.open(args.store)
    jobs = sibling_jobs(store, str(Path(args.policy).resolve()), args.seed, cfg.mbpo)
    mc = cfg.mbpo
    print(f"{mc.branches // mc.group_size} start states ({mc.start_sampler}) x {mc.group_size} branches of "
          f"{mc.n_chunks} chunks; {mc.branches - len(jobs)} already in the store, {len(jobs)} to run")
    if jobs:
        from actors.env_runner import make_env_runners, run_by_task

        connect_ray(max(args.workers, os.cpu_count() or 1))
        bar = _progress(len(jobs), "branches")
        wins = [0]

        def on_result(r) -> None:
            wins[0] += r["success"]
            bar.update(1)
            bar.set_postfix(success=f"{wins[0]}/{bar.n}")

        d = cfg.to_dict()  # the env renders as the store holds frames
        d["env"] = {**d["env"], "image_size": store.spec.image_size, "chunk_size": store.spec.chunk_size}
        runners = make_env_runners(d, args.store, args.workers, mc.runner_cpus)
        remake = lambda: make_env_runners(d, args.store, 1, mc.runner_cpus)[0]  # noqa: E731
        try:
            run_by_task(runners, jobs, remake, "policy_branch", on_result)
        finally:
            bar.close()
    print(summarize(store, args.seed).line())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-lerobot", help="a LeRobot dataset (v2.1 or v3.0) -> replay store")
    i.add_argument("dataset", help="the dataset's folder (meta/info.json, data/, videos/)")
    i.add_argument("--out", required=True, help="the new store")
    i.add_argument("--head-key", dest="head_key", help="the head camera feature (default: found by name, "
                   "e.g. observation.images.image or image)")
    i.add_argument("--wrist-key", dest="wrist_key", help="the wrist camera feature (e.g. wrist_image)")
    i.add_argument("--state-key", dest="state_key", help="the 8-dim proprio feature ('' for none)")
    i.add_argument("--action-key", dest="action_key", help="the 7-dim action feature (e.g. actions)")
    i.add_argument("--suite", help="match instructions to this LIBERO suite's tasks only (default: any suite; "
                   "tasks LIBERO does not know are kept as suite 'lerobot')")
    i.add_argument("--image-size", type=int, default=128, dest="image_size")
    i.add_argument("--chunk-size", type=int, default=10, dest="chunk_size")
    i.add_argument("--assume-failure", action="store_true", dest="assume_failure",
                   help="episodes without next.success / next.reward failed (default: they succeeded, as demos)")
    i.add_argument("--rotate180", action="store_true", help="frames are the raw renderer's (upside down)")
    i.set_defaults(func=cmd_import_lerobot)

    e = sub.add_parser("export-lerobot", help="replay store -> LeRobot v3.0 dataset (one row per chunk)")
    e.add_argument("store")
    e.add_argument("--out", required=True)
    e.add_argument("--images", choices=["mp4", "png"], default="mp4", help="camera frames as MP4 or PNG in parquet")
    e.add_argument("--episodes-per-file", type=int, default=1000, dest="episodes_per_file")
    e.set_defaults(func=cmd_export_lerobot)

    b = sub.add_parser("branches", help="sibling branches of a policy from stored states, run in LIBERO, "
                       "appended to the store (source branch)")
    b.add_argument("store", help="the store to draw start states from and append the branches to")
    b.add_argument("--policy", required=True, help="the policy checkpoint that samples the branches")
    b.add_argument("--workers", type=int, default=2, help="env-runner Ray actors")
    b.add_argument("--seed", type=int, default=0, help="draws the start states and the sampling seeds")
    b.add_argument("--config", help="YAML config; mbpo.branches, group_size, n_chunks, tasks, start_sampler, "
                   "start_window, fail_weight, policy_temperature as dotted overrides")
    b.set_defaults(func=cmd_branches, shorthands={})
