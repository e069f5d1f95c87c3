"""Imagined success per branch of a policy in one or two world models, from the same start states.

    python benchmarks/imagined_success.py --policy SFT_CKPT --store STORE --after WM_CKPT [--before OLD_WM]
        [--trained-policy CKPT] [--start-states 256] [--n-chunks 2] [--tasks 0-3] [--temperature 1.0] [--seed 0]
        [--reward-source token|frames|mean] [--real] [--name imagined_success]

``--start-states`` chunk boundaries are drawn once (uniformly over the store's episodes of
``--tasks``, or near the end of successful episodes with ``--sampler reverse``; seeded) and every world model imagines ``--n-chunks``-chunk branches of the policy
(sampled actions, as in MBPO) from exactly those states; a branch succeeds when the world model
answers yes at one of its steps. Also reported: success by the start's distance to its episode's
end, and the same policy's greedy branches. ``--reward-source`` picks the answer that decides a
branch's reward (``world_model.reward_source``); a frame reward in the checkpoint is judged too.
With ``--real`` the sampled branches are also replayed in LIBERO from their start's simulator state
(``mbpo_ray.rl.grounding``): imagined vs real success per step and per branch, imagined vs real
frames. With ``--trained-policy`` the comparison is between policies instead: the SFT policy and a
trained one (an MBPO checkpoint's ``policy`` folder) in the ``--after`` world model from the same
start states, paired per start state (exact McNemar test on the branches' outcomes, sampled and
greedy, and on their real replays with ``--real``): whether training raised success in the model
it trained in, measured on fixed starts rather than on each iteration's fresh draw.
Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import draw_start_states, mcnemar_exact, write_result  # noqa: E402
from mbpo_ray.config import START_SAMPLERS  # noqa: E402


def measure(world_model: str, policy_dir: str, table, to_go: np.ndarray, size: int, args, starts=None) -> dict:
    from mbpo_ray.policy import load_policy
    from mbpo_ray.replay import frames
    from mbpo_ray.replay.samplers import TO_GO_BUCKETS, bucket_name
    from mbpo_ray.rl.imagine import Branches, imagine
    from mbpo_ray.world_model.evaluate import WorldModel

    wm = WorldModel(world_model, "vllm", reward=args.reward_source, load_frame_reward=True, keep_pixels=args.keep_pixels)
    policy = load_policy(policy_dir)
    head, wrist = frames(table, "head", size), frames(table, "wrist", size)
    instr = table.column("instruction").to_pylist()
    out = {"checkpoint": os.path.basename(os.path.normpath(world_model))}
    try:
        for mode, greedy in (("sampled", False), ("greedy", True)):
            parts = [imagine(wm, policy, head[i : i + 64], wrist[i : i + 64], instr[i : i + 64], args.n_chunks,
                             args.temperature, args.seed + i, greedy=greedy) for i in range(0, len(instr), 64)]
            br = Branches.concat(parts)
            hit = br.terminal.any(1)
            out.setdefault("hits", {})[mode] = hit
            out[mode] = {"success_per_branch": round(float(hit.mean()), 4), "successes": int(hit.sum()),
                         "by_chunks_to_go": {bucket_name(lo, hi): round(float(hit[(to_go >= lo) & (to_go <= hi)].mean()), 4)
                                             for lo, hi in TO_GO_BUCKETS if ((to_go >= lo) & (to_go <= hi)).any()}}
            frames_hit = (br.p_yes_frames > 0.5) & br.valid
            if np.isfinite(br.p_yes_frames[br.valid]).all():
                out[mode]["frame_reward_success_per_branch"] = round(float(frames_hit.any(1).mean()), 4)
            if mode == "sampled" and starts is not None:
                from mbpo_ray.config import build_config
                from mbpo_ray.rl.grounding import grounding_report, replay_branches

                env_cfg = build_config().env
                real = replay_branches(env_cfg, starts[0], starts[1], br)
                out["real"] = grounding_report(br, real, wm.tokenizer.preset.image_size)
                out["hits"]["real"] = real.success.any(1)
    finally:
        wm.engine.close()
    return out


def compare_policies(args, table, to_go: np.ndarray, size: int, starts) -> dict:
    """The SFT policy (--policy) and --trained-policy from the same start states in the --after world
    model: success per branch of each, and per mode the exact McNemar test of their paired outcomes."""
    wm = os.path.expanduser(args.after)
    detail = {name: measure(wm, os.path.expanduser(path), table, to_go, size, args, starts)
              for name, path in (("sft", args.policy), ("trained", args.trained_policy))}
    hits = {name: d.pop("hits") for name, d in detail.items()}
    paired = {}
    for mode in hits["sft"]:
        test = mcnemar_exact(hits["sft"][mode].tolist(), hits["trained"][mode].tolist())
        paired[mode] = {"sft": round(float(hits["sft"][mode].mean()), 4),
                        "trained": round(float(hits["trained"][mode].mean()), 4), **test}
    return {"world_model": os.path.basename(os.path.normpath(wm)), "trained_policy": args.trained_policy.replace(os.path.expanduser("~"), "~"),
            "paired": paired, "detail": detail}


def main() -> None:
    from mbpo_ray.cli import add_keep_pixels

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--after", required=True, help="the world model as trained now")
    ap.add_argument("--before", help="an earlier world model, for the comparison")
    ap.add_argument("--before-label", default="", help="what the earlier world model is (recorded in the JSON)")
    ap.add_argument("--after-label", default="", help="what the world model as trained now is")
    ap.add_argument("--start-states", type=int, default=256, dest="start_states")
    ap.add_argument("--n-chunks", type=int, default=2, dest="n_chunks")
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--temperature", type=float, default=1.0, help="the world model's (mbpo.temperature)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reward-source", default="token", choices=["token", "frames", "mean"], dest="reward_source",
                    help="the answer that decides a branch's reward (world_model.reward_source)")
    add_keep_pixels(ap)
    ap.add_argument("--trained-policy", dest="trained_policy",
                    help="compare this policy with --policy in the --after world model, paired per start state")
    ap.add_argument("--real", action="store_true", help="also replay the sampled branches in LIBERO")
    ap.add_argument("--sampler", default="uniform", choices=START_SAMPLERS,
                    help="how start states are drawn (mbpo.start_sampler at iteration 0, default mbpo settings)")
    ap.add_argument("--name", default="imagined_success", help="result name: benchmarks/results/NAME.json")
    args = ap.parse_args()
    from mbpo_ray.config import parse_task_ids
    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.replay.samplers import chunks_to_go

    store = ReplayStore.open(os.path.expanduser(args.store))
    tasks = parse_task_ids(args.tasks)
    ep, chunk = draw_start_states(store, args.start_states, args.tasks, args.sampler, args.seed)
    to_go = chunks_to_go(store.episodes, ep, chunk)
    table = store.read_start_states(ep, chunk, ["head", "wrist", "instruction", "sim_state"])
    sources = [store.episodes[int(e)].source for e in ep]
    starts = None
    if args.real:
        starts = ([(store.episodes[int(e)].suite, store.episodes[int(e)].task_id) for e in ep],
                  [np.asarray(s, np.float64) for s in table.column("sim_state").to_pylist()])
    result = {"start_states": len(ep), "n_chunks": args.n_chunks, "temperature": args.temperature,
              "reward_source": args.reward_source, "sampler": args.sampler, "keep_pixels": args.keep_pixels,
              "tasks": tasks, "start_sources": {s: sources.count(s) for s in sorted(set(sources))}}
    if args.trained_policy:
        if args.before:
            ap.error("--trained-policy compares policies in one world model (--after): leave out --before")
        result["policy_comparison"] = compare_policies(args, table, to_go, store.spec.image_size, starts)
        write_result(args.name, result)
        return
    runs = {"after": args.after, **({"before": args.before} if args.before else {})}
    for name, path in runs.items():
        result[f"{name}_detail"] = measure(os.path.expanduser(path), os.path.expanduser(args.policy), table, to_go,
                                           store.spec.image_size, args, starts)
        result[f"{name}_detail"].pop("hits")
        result[name] = result[f"{name}_detail"]["sampled"]["success_per_branch"]
    result["labels"] = {"before": args.before_label, "after": args.after_label}
    if not args.before:
        result["before"] = None
        result["before_note"] = ("no world model trained before the fix (success chunks cut short and padded) "
                                 "was available to this run: pass --before")
    write_result(args.name, result)
    print({k: result[k] for k in ("start_states", "before", "after")})


if __name__ == "__main__":
    main()
