"""Success against real env steps, every method that learned from real LIBERO data, in one figure.

    python benchmarks/real_data_curves.py [--self-imitation self_imitation self_imitation_seed1]
        [--online sample_efficiency] [--name real_data_curves]

Reads result files already written (nothing is run): the self-imitation rounds of each seed
(``benchmarks/self_imitation.py``), and the online-RL curve of ``benchmarks/sample_efficiency.py``.
Writes benchmarks/results/NAME.{json,png}: each seed's points with their paired test against SFT,
the mean and spread over seeds per round, and the command and commit of every source file.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import provenance, read_result, write_result  # noqa: E402
from benchmarks.self_imitation import draw_rounds, finish_axes, new_axes  # noqa: E402


def source(name: str, r: dict) -> dict:
    return {"file": f"benchmarks/results/{name}.json", "command": r["command"], "commit": r["commit"]}


def rounds_over_seeds(seeds: dict[str, dict]) -> list[dict]:
    """Per round present in every seed: mean and spread of success and of real env steps."""
    n = min(len(r["points"]) for r in seeds.values())
    out = []
    for k in range(1, n):
        pts = [r["points"][k] for r in seeds.values()]
        rates = np.array([p["success_rate"] for p in pts])
        out.append({"round": k, "seeds": len(pts), "success_mean": round(float(rates.mean()), 4),
                    "success_min": round(float(rates.min()), 4), "success_max": round(float(rates.max()), 4),
                    "real_env_steps_mean": int(np.mean([p["real_env_steps"] for p in pts])),
                    "p_values_vs_sft": [round(p["vs_sft"]["p_value"], 4) for p in pts],
                    "every_seed_p_below_0.05": all(p["vs_sft"]["p_value"] < 0.05 for p in pts)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-imitation", nargs="+", default=["self_imitation", "self_imitation_seed1"],
                    dest="self_imitation", help="self_imitation.py result names, one per seed")
    ap.add_argument("--online", default="sample_efficiency", help="sample_efficiency.py result name ('' for none)")
    ap.add_argument("--name", default="real_data_curves")
    args = ap.parse_args()
    seeds = {n: read_result(n) for n in args.self_imitation}
    sft = {p["success_rate"] for r in seeds.values() for p in r["points"][:1]}
    if len(sft) != 1:
        raise SystemExit(f"the self-imitation files start from different SFT evaluations ({sorted(sft)}): not one curve")
    first = next(iter(seeds.values()))
    result = {"tasks": first["tasks"], "sft": first["points"][0],
              "self_imitation": {n: {"seed": r["seed"], "points": [{k: p[k] for k in ("round", "real_env_steps", "success_rate")}
                                                                   | ({"vs_sft": p["vs_sft"]} if "vs_sft" in p else {})
                                                                   for p in r["points"]],
                                     "control": [{k: c[k] for k in ("round", "real_env_steps", "success_rate", "vs_sft")}
                                                 for c in r.get("control", [])]} for n, r in seeds.items()},
              "self_imitation_over_seeds": rounds_over_seeds(seeds),
              "sources": [source(n, r) for n, r in seeds.items()]}
    if args.online:
        on = read_result(args.online)
        result["online"] = {"points": on["methods"]["online"], "final_vs_sft": on["detail"]["online"]["final_vs_sft"]}
        result["sources"].append(source(args.online, on))
    write_result(args.name, result, provenance())
    plot(result, args.name)


def plot(r: dict, name: str) -> None:
    fig, ax = new_axes()
    colors = ["#228833", "#66CCEE", "#CCBB44", "#AA3377"]
    for i, (s, c) in enumerate(zip(r["self_imitation"].values(), colors, strict=False)):
        draw_rounds(ax, s["points"], c, f"self-imitation, seed {s['seed']} (round 0: SFT)", -12 if i % 2 == 0 else 6)
        ctrl = s.get("control", [])
        ax.scatter([x["real_env_steps"] for x in ctrl], [100 * x["success_rate"] for x in ctrl], color=c, marker="x",
                   zorder=3, label=f"seed {s['seed']}: 1 and 2 rounds of cloning on the demonstrations alone" if ctrl else None)
    if "online" in r:
        pts = r["online"]["points"]
        ax.plot([p["real_env_steps"] for p in pts], [100 * p["success_rate"] for p in pts], marker="s",
                color="#4477AA", label=f"online RL, group-relative (p={r['online']['final_vs_sft']['p_value']:.2g})")
    ax.axhline(100 * r["sft"]["success_rate"], color="#999999", lw=0.8, ls="--", label="SFT")
    finish_axes(fig, ax, r["tasks"], "Learning from real LIBERO data, one SFT checkpoint; p: exact McNemar vs SFT", name)


if __name__ == "__main__":
    main()
