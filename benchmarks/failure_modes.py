"""How the policy's sampled LIBERO episodes ended, by the policy version that ran them.

    python benchmarks/failure_modes.py --store LABEL=STORE [LABEL=STORE ...] [--source real]
        [--name failure_modes]

Every episode of the given source is measured at its last observation against its task's goal, in
LIBERO from the recorded simulator state (``mbpo_ray.envs.goal_state``): ``goal``, on the target but
``on_target_off_centre`` (LIBERO's ``On`` wants the centres within 3 cm), ``lifted`` (still held, or
falling) or ``elsewhere`` (never picked up, dropped, knocked over). Episodes are grouped per store and
per ``policy_version`` (in a training run's store: one group per round of rollouts), so a run's
rounds show which failures it removed and which it kept (per task as well: a run draws its episodes'
tasks at random, so the mix differs between rounds). An episode whose success was recorded
during its last chunk but whose last observation no longer shows it (the chunk runs to its end after
success) is counted too (``success_not_at_end``): a reward read from that frame cannot see it.
``ontop_radius_px``: how many head-camera pixels LIBERO's 3 cm span at each task's target, at 128 and
64 pixels (the store's and the world-model tokenizer's resolution).
Writes benchmarks/results/NAME.json and .png.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import no_home, provenance, save_figure, write_result  # noqa: E402

COLOURS = {"goal": "#2ca02c", "on_target_off_centre": "#ff7f0e", "lifted": "#9467bd", "elsewhere": "#d62728"}


def groups(store, source: str) -> list[dict]:
    """One row per policy version of ``store``'s episodes of ``source``: ``goal_state.outcome_summary``,
    and the same per task."""
    from mbpo_ray.envs.goal_state import last_observations, outcome_summary

    eps = [e for e in store.episodes if e.source == source]
    if not eps:
        raise SystemExit(f"{store.root} holds no episodes of source {source!r}")
    version = np.array([store.read_episode(e.episode_id, ["policy_version"]).column("policy_version")[0].as_py()
                        for e in eps])
    cats, offset = last_observations(store, eps)
    success = np.array([e.success for e in eps])
    task = np.array([f"{e.suite}/{e.task_id}" for e in eps])
    return [{"policy_version": int(v), **outcome_summary(cats, offset, success, version == v),
             "by_task": {str(t): outcome_summary(cats, offset, success, (version == v) & (task == t))
                         for t in sorted(set(task[version == v].tolist()))}}
            for v in sorted(set(version.tolist()))]


def radius_px(out: dict) -> dict:
    """LIBERO's 3 cm goal radius in head-camera pixels at the target, per task, at 128 and 64 pixels."""
    from mbpo_ray.envs.goal_state import radius_in_pixels

    tasks = sorted({t for entry in out.values() for row in entry["by_policy_version"] for t in row["by_task"]})
    return {t: {str(s): round(px, 2) for s, px in radius_in_pixels(t.split("/")[0], int(t.split("/")[1])).items()}
            for t in tasks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", nargs="+", required=True, metavar="LABEL=STORE")
    ap.add_argument("--source", default="real", help="episode source to read (default: the policy's rollouts)")
    ap.add_argument("--name", default="failure_modes")
    args = ap.parse_args()
    prov = provenance()  # the commit the run starts from
    from mbpo_ray.replay import ReplayStore

    out = {}
    for item in args.store:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--store {item!r}: give LABEL=STORE")
        out[label] = {"store": no_home(path), "by_policy_version": groups(ReplayStore.open(os.path.expanduser(path)),
                                                                             args.source)}
        for row in out[label]["by_policy_version"]:
            print(label, row, flush=True)
    write_result(args.name, {"source": args.source, "stores": out, "ontop_radius_px": radius_px(out),
                             "png": f"benchmarks/results/{args.name}.png"}, prov)
    plot(args.name, out)


def plot(name: str, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, shares = [], []
    for label, entry in out.items():
        for row in entry["by_policy_version"]:
            v = row["policy_version"]
            labels.append(f"{label}, {f'policy v{v}' if v >= 0 else 'no policy version'} ({row['episodes']} ep.)")
            shares.append({c: n / row["episodes"] for c, n in row["ended"].items()})
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.4), dpi=120)
    y = np.arange(len(labels))[::-1]
    left = np.zeros(len(labels))
    for cat, colour in COLOURS.items():
        w = np.array([s[cat] for s in shares])
        ax.barh(y, w, left=left, color=colour, label=cat.replace("_", " "))
        left += w
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of sampled episodes, by where the object ended (LIBERO state)")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_title("How the policy's episodes ended, per policy version", fontsize=9)
    fig.tight_layout()
    save_figure(fig, name)


if __name__ == "__main__":
    main()
