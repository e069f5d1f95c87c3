"""Does the world model order a group's branches as real LIBERO does? (``mbpo_ray.rl.advantage_fidelity``)

    python benchmarks/advantage_fidelity.py --policy SFT_CKPT --world-model WM_CKPT --store STORE
        [--start-states 32] [--group-size 8] [--n-chunks 2] [--tasks 0-3] [--sampler reverse]
        [--draws 4] [--temperature 1.0] [--policy-temperature 1.0] [--start-window 3] [--fail-weight 1]
        [--replay-workers 2] [--critic [--critic-trunk STEPS]] [--seed 0] [--name advantage_fidelity] [--arrays OUT.npz]

``--start-states`` chunk boundaries with a recorded simulator state are drawn (seeded; ``--sampler``
as in the loop at iteration 0, with ``--start-window`` and ``--fail-weight`` as mbpo.start_window and
mbpo.fail_weight), each branched ``--group-size`` times by the policy in the world model (actions
sampled at ``--policy-temperature``, every step taken). Those action chunks are then (1) imagined again open loop
``--draws`` times at ``--temperature`` and once greedily, and (2) executed open loop in LIBERO from the
start's simulator state. For every reward definition (answer token or frame reward; hard = the
loop's thresholded answer, soft = the expected discounted success; one draw, the mean of the draws,
greedy frames) the JSON gives how well its returns order the branches of each group against the real
returns (pair accuracy, advantage cosine, bootstrap intervals over start states) and which share of
their within-group spread is the world model's own sampling. With ``--critic`` the returns PPO's
bootstrap would give (success, else gamma^n V(last observation), V from a value head fitted on the
store's real returns on the frozen trunk; with ``--critic-trunk STEPS`` also, as ``bootstrapped_trunk``,
from a copy of the whole policy fitted on them) are scored too, the real side reading V on the replay's
last views. Writes
benchmarks/results/NAME.json and NAME.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, draw_sim_starts, provenance, save_figure, write_result  # noqa: E402
from mbpo_ray.config import START_SAMPLERS  # noqa: E402


def draw_starts(args):
    """(store, table of start rows, episodes' (suite, task), simulator states, chunks to go)."""
    from mbpo_ray.replay.samplers import chunks_to_go

    store, ep, chunk, table, sims = draw_sim_starts(args, ("head", "wrist", "instruction"))
    envs = [(store.episodes[int(e)].suite, store.episodes[int(e)].task_id) for e in ep]
    return store, table, envs, sims, chunks_to_go(store.episodes, ep, chunk)


def imagine_all(args, table, size: int):
    """The policy's branches (actions) and the open-loop answers of every draw: dict name -> (K, B, n)."""
    from mbpo_ray.policy import load_policy
    from mbpo_ray.replay import frames
    from mbpo_ray.rl.advantage_fidelity import open_loop
    from mbpo_ray.rl.imagine import Branches, imagine
    from mbpo_ray.seeds import derive_seed
    from mbpo_ray.world_model.evaluate import WorldModel

    g = args.group_size
    head = np.repeat(frames(table, "head", size), g, 0)
    wrist = np.repeat(frames(table, "wrist", size), g, 0)
    instr = [x for x in table.column("instruction").to_pylist() for _ in range(g)]
    group = np.repeat(np.arange(table.num_rows), g)
    wm = WorldModel(os.path.expanduser(args.world_model), "vllm", load_frame_reward=True)
    policy = load_policy(os.path.expanduser(args.policy))
    policy.temperature = args.policy_temperature
    answers: dict[str, list[np.ndarray]] = {}
    try:
        b = 64
        br = Branches.concat([imagine(wm, policy, head[i:i + b], wrist[i:i + b], instr[i:i + b], args.n_chunks,
                                      args.temperature, derive_seed(args.seed, 1, i), stop_at_success=False)
                              for i in range(0, len(instr), b)])
        passes = [(f"T{args.temperature:g}", args.temperature, k) for k in range(args.draws)] + [("T0", 0.0, 0)]
        for name, temp, k in passes:
            t0 = time.time()
            outs = [open_loop(wm, head[i:i + b], wrist[i:i + b], instr[i:i + b], br.actions[i:i + b], temp,
                              derive_seed(args.seed, 2, k, i)) for i in range(0, len(instr), b)]
            answers.setdefault(f"token_{name}", []).append(np.concatenate([o.p_yes for o in outs]))
            if outs[0].p_yes_frames is not None:
                answers.setdefault(f"frames_{name}", []).append(np.concatenate([o.p_yes_frames for o in outs]))
            print(f"  open loop {name} draw {k}: {time.time() - t0:.0f} s", flush=True)
    finally:
        wm.engine.close()
    return br, group, {k: np.stack(v) for k, v in answers.items()}


def score(answers: dict, real: np.ndarray, group: np.ndarray, gamma: float, temp: str) -> dict:
    """Every reward definition's fidelity against the real returns."""
    from mbpo_ray.rl.advantage_fidelity import fidelity, hard_returns, noise_share, soft_returns

    out = {}
    for source in ("token", "frames"):
        if f"{source}_{temp}" not in answers:
            continue
        draws, greedy = answers[f"{source}_{temp}"], answers[f"{source}_T0"][0]
        for kind, fn in (("hard", hard_returns), ("soft", soft_returns)):
            per_draw = np.stack([fn(d, gamma) for d in draws])
            out[f"{source}_{kind}_{temp}_one_draw"] = {**fidelity(per_draw[0], real, group),
                                                       "noise_share": round(noise_share(per_draw, group), 4)}
            if len(draws) > 1:
                out[f"{source}_{kind}_{temp}_mean_of_{len(draws)}"] = fidelity(per_draw.mean(0), real, group)
            out[f"{source}_{kind}_greedy_frames"] = fidelity(fn(greedy, gamma), real, group)
    return out


def branch_success(answers: dict, real_success: np.ndarray, temp: str) -> dict:
    """Does the world model call the same branches successful as LIBERO: per answer source, one draw at
    ``temp`` and the greedy frames, success somewhere in the branch (P(yes) > 0.5 at a step) against
    success in the replay: precision, recall, F1 and both rates (what cloning imagined successes
    would learn from)."""
    from mbpo_ray.world_model.evaluate import f1

    truth = real_success.any(1)
    out = {}
    for name in (f"token_{temp}", "token_T0", f"frames_{temp}", "frames_T0"):
        if name not in answers:
            continue
        said = (answers[name][0] > 0.5).any(1)
        tp = int((said & truth).sum())
        out[name] = {"f1": round(f1(said, truth), 4), "precision": round(tp / max(1, int(said.sum())), 4),
                     "recall": round(tp / max(1, int(truth.sum())), 4), "imagined_rate": round(float(said.mean()), 4),
                     "real_rate": round(float(truth.mean()), 4)}
    return out


def critic_values(args, br, real_last: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """V(last observation) of every branch, imagined and real (``real_last``: the replay's last head and
    wrist views), per critic fitted on the store's real Monte-Carlo returns (read once):
    ``bootstrapped``, the value head on the policy's frozen trunk (``rl.critic.fitted_value_head``), and
    with ``--critic-trunk STEPS`` ``bootstrapped_trunk``, a copy of the whole policy fitted for that many
    steps (``fitted_value_network``)."""
    from mbpo_ray.config import parse_task_ids
    from mbpo_ray.policy import Observations, load_policy
    from mbpo_ray.rl.critic import fitted_critic_values, real_returns

    policy = load_policy(os.path.expanduser(args.policy)).eval()
    rr = real_returns(os.path.expanduser(args.store), args.gamma, parse_task_ids(args.tasks), max_rows=10**7,
                      seed=args.seed)
    proprio = np.zeros((len(br.instruction), 8), np.float32)
    views = [Observations(h, w, proprio, list(br.instruction)) for h, w in ((br.final_head, br.final_wrist), real_last)]
    names = {"value_head": "bootstrapped", "whole_policy": "bootstrapped_trunk"}
    return {names[k]: tuple(v) for k, v in fitted_critic_values(policy, rr, views, args.critic_trunk, args.seed).items()}


def score_bootstrapped(answers: dict, v_im: np.ndarray, success: np.ndarray, v_real: np.ndarray, group: np.ndarray,
                       gamma: float, temp: str) -> dict:
    """Fidelity of the critic-bootstrapped returns (``bootstrapped_returns``) against the real ones
    (the replay's success, else gamma^n V(the replay's last views))."""
    from mbpo_ray.rl.advantage_fidelity import bootstrapped_returns, fidelity

    real = bootstrapped_returns(success.astype(np.float64), v_real, gamma)
    out = {"critic_only": fidelity(v_im, v_real, group)}
    draws, greedy = answers[f"token_{temp}"], answers["token_T0"][0]
    for soft in (False, True):
        kind = "soft" if soft else "hard"
        out[f"token_{kind}_{temp}_one_draw_bootstrapped"] = fidelity(bootstrapped_returns(draws[0], v_im, gamma, soft), real, group)
        out[f"token_{kind}_greedy_frames_bootstrapped"] = fidelity(bootstrapped_returns(greedy, v_im, gamma, soft), real, group)
    within = np.mean([real[group == g].std() for g in np.unique(group)])
    return {"definitions": out, "real_within_group_std": round(float(within), 4),
            "v_real_mean": round(float(v_real.mean()), 4), "v_imagined_mean": round(float(v_im.mean()), 4),
            "v_corr_imagined_real": round(float(np.corrcoef(v_im, v_real)[0, 1]), 4)}


def real_by_to_go(real_ret: np.ndarray, group: np.ndarray, to_go: np.ndarray, spread: np.ndarray) -> dict:
    """Per bucket of the start's chunks to go: start states, how many differ in reality (``spread``, per
    start state), success per branch."""
    from mbpo_ray.replay.samplers import TO_GO_BUCKETS, bucket_name

    groups = np.unique(group)
    out = {}
    for lo, hi in TO_GO_BUCKETS:
        sel = (to_go >= lo) & (to_go <= hi)
        if sel.any():
            out[bucket_name(lo, hi)] = {"start_states": int(sel.sum()), "with_spread": int(spread[sel].sum()),
                                        "success_per_branch": round(float((real_ret[np.isin(group, groups[sel])] > 0).mean()), 4)}
    return out


def plot(name: str, rows: dict, spread: int, groups: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    acc = np.array([rows[k]["pair_accuracy"] for k in labels])
    ci = np.array([rows[k]["pair_accuracy_ci95"] for k in labels])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.8), dpi=120)
    y = np.arange(len(labels))
    ax.errorbar(acc, y, xerr=[acc - ci[:, 0], ci[:, 1] - acc], fmt="o", color="#4477aa", capsize=3)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("pairs of branches of one start state ordered as in real LIBERO (0.5 = chance), 95% CI", fontsize=8)
    ax.set_title("Does the world model rank the policy's actions as the simulator does?\n"
                 f"(pairs from the {spread} of {groups} start states whose branches differ in reality)", fontsize=9)
    save_figure(fig, name)


def main() -> None:
    from benchmarks.common import add_loop_inputs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_loop_inputs(ap)
    ap.add_argument("--start-states", type=int, default=32, dest="start_states")
    ap.add_argument("--group-size", type=int, default=8, dest="group_size")
    ap.add_argument("--n-chunks", type=int, default=2, dest="n_chunks")
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--sampler", default="reverse", choices=START_SAMPLERS)
    ap.add_argument("--draws", type=int, default=4, help="open-loop world-model draws at --temperature")
    ap.add_argument("--temperature", type=float, default=1.0, help="the world model's sampling temperature")
    ap.add_argument("--policy-temperature", type=float, default=1.0, dest="policy_temperature",
                    help="the policy's sampling temperature (mbpo.policy_temperature)")
    ap.add_argument("--start-window", type=int, default=3, dest="start_window", help="mbpo.start_window (reverse)")
    ap.add_argument("--fail-weight", type=float, default=1.0, dest="fail_weight", help="mbpo.fail_weight (reverse)")
    ap.add_argument("--replay-workers", type=int, default=2, dest="replay_workers",
                    help="processes replaying the branches in LIBERO")
    ap.add_argument("--critic", action="store_true",
                    help="also score critic-bootstrapped returns: a value head fitted on the store's real returns "
                         "reads the last imagined and the last real views")
    ap.add_argument("--critic-trunk", type=int, default=0, dest="critic_trunk", metavar="STEPS",
                    help="with --critic: also score a copy of the whole policy (trunk and value head) fitted for "
                         "this many steps (bootstrapped_trunk in the JSON)")
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="advantage_fidelity")
    ap.add_argument("--arrays", help="also save the branches' actions, every draw's answers, the real outcomes and "
                                     "both last observations (imagined, real) "
                                     "here (.npz), to score other reward definitions later without a rerun")
    args = ap.parse_args()
    prov = provenance()  # the commit the run starts from (the tree may change while it runs)
    from mbpo_ray.config import build_config
    from mbpo_ray.rl.advantage_fidelity import real_returns
    from mbpo_ray.rl.grounding import replay_branches

    t0 = time.time()
    store, table, envs, sims, to_go = draw_starts(args)
    br, group, answers = imagine_all(args, table, store.spec.image_size)
    g = args.group_size
    real = replay_branches(build_config().env, [e for e in envs for _ in range(g)], [s for s in sims for _ in range(g)], br,
                           workers=args.replay_workers)
    real_ret = real_returns(real.success, args.gamma)
    # the real views after the branch's last replayed step (the replay stops at a success)
    last = np.where(real.success.any(1), real.success.argmax(1), br.valid.shape[1] - 1)
    real_last = (real.head[np.arange(len(br)), last], real.wrist[np.arange(len(br)), last])
    if args.arrays:
        np.savez_compressed(os.path.expanduser(args.arrays), actions=br.actions, group=group, real_success=real.success,
                            imagined_final_head=br.final_head, imagined_final_wrist=br.final_wrist,
                            real_final_head=real_last[0], real_final_wrist=real_last[1],
                            instruction=np.array(br.instruction), to_go=to_go,
                            **{f"answers_{k}": v for k, v in answers.items()})
    temp = f"T{args.temperature:g}"
    boot = {key: score_bootstrapped(answers, v_im, real.success, v_real, group, args.gamma, temp)
            for key, (v_im, v_real) in (critic_values(args, br, real_last) if args.critic else {}).items()}
    rows = score(answers, real_ret, group, args.gamma, temp)
    spread = np.array([np.ptp(real_ret[group == k]) > 0 for k in np.unique(group)])
    result = {"start_states": int(table.num_rows), "group_size": g, "branches": int(len(br)), "n_chunks": args.n_chunks,
              "temperature": args.temperature, "policy_temperature": args.policy_temperature, "draws": args.draws,
              "sampler": args.sampler, "start_window": args.start_window, "fail_weight": args.fail_weight, "gamma": args.gamma,
              "real": {"success_per_branch": round(float(real.success.any(1).mean()), 4),
                       "groups_with_spread": int(spread.sum()),
                       "by_chunks_to_go": real_by_to_go(real_ret, group, to_go, spread),
                       "start_to_go_mean": round(float(np.mean(to_go)), 2)},
              "definitions": rows, "branch_success": branch_success(answers, real.success, temp), **boot, "seconds": round(time.time() - t0, 1),
              "world_model": os.path.basename(os.path.normpath(args.world_model)),
              "png": f"benchmarks/results/{args.name}.png"}
    write_result(args.name, result, prov)
    plot(args.name, rows, int(spread.sum()), len(spread))
    for k, v in rows.items():
        print(f"{k:34s} pair acc {v['pair_accuracy']:.3f} {v['pair_accuracy_ci95']}  cos {v['advantage_cosine']:+.3f}")
    print(f"real groups with spread: {int(spread.sum())}/{len(spread)}; results in {RESULTS}")


if __name__ == "__main__":
    main()
