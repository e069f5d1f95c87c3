"""Two methods compared over several seeds, episode by episode on the same init states.

    python benchmarks/seed_pool.py --a RUN_A0 RUN_A1 ... --b RUN_B0 RUN_B1 ... --name NAME \\
        [--label-a TEXT] [--label-b TEXT] [--resamples 10000]

Each of ``--a`` and ``--b`` is a run folder of ``mbpo-ray train`` (its last ``eval/iter_*.json``) or an
evaluation report (``mbpo-ray eval``'s ``eval.json``); ``--a``'s i-th run is paired with ``--b``'s i-th
(the same seed, e.g. a method and its null control), or every run of one side with the other side's
only one (e.g. the SFT evaluation all seeds started from). Writes benchmarks/results/NAME.json (and .png):

- per seed: both success rates and the exact McNemar test on the (task, init state) both evaluated;
- per task: each side's success, averaged over the seeds;
- pooled: the discordant pairs of all seeds summed and tested the same way (a stratified sign test:
  under "no difference" each discordant pair leans either way with probability 1/2, in every seed);
- the mean difference over seeds with a 95% interval from a paired bootstrap that resamples
  (task, init state) keys, so the seeds' outcomes on one init state stay together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    eval_outcomes,
    grouped_bars,
    last_evaluation,
    mcnemar_exact,
    no_home,
    run_outcomes,
    sign_test_p,
    write_result,
)
from benchmarks.self_imitation import made_by  # noqa: E402

Outcomes = dict[tuple[int, int], bool]


def load_outcomes(path: str) -> tuple[Outcomes, dict]:
    """(task, init state) -> success of a run folder's last evaluation or of an eval report, and what
    made it (the run's ``made_by.json``, or the report's checkpoint)."""
    p = Path(os.path.expanduser(path))
    if p.is_dir():
        it = last_evaluation(p)
        return run_outcomes(p, it), {"path": no_home(str(p)), "evaluation": f"iter_{it}.json", **made_by(p)}
    if not p.is_file():
        raise SystemExit(f"{path}: neither a run folder nor an evaluation report")
    try:
        report = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"{p}: not readable JSON ({e}); rerun what wrote it") from None
    if "tasks" not in report:
        raise SystemExit(f"{path}: not an `mbpo-ray eval` report (no 'tasks')")
    return eval_outcomes(report), {"path": no_home(str(p)), "checkpoint": no_home(str(report.get("checkpoint")))}


def pooled_test(per_seed: list[dict]) -> dict:
    """The discordant pairs of every seed summed, tested as one exact sign test."""
    first = sum(s["only_first"] for s in per_seed)
    second = sum(s["only_second"] for s in per_seed)
    return {"p_value": sign_test_p(first, second), "only_first": first, "only_second": second,
            "pairs": sum(s["pairs"] for s in per_seed)}


def bootstrap_interval(pairs: list[tuple[Outcomes, Outcomes]], keys: list, resamples: int, seed: int = 0) -> list[float]:
    """95% interval of the mean (over seeds) success difference b - a, resampling the shared keys."""
    import numpy as np

    diff = np.array([[float(b[k]) - float(a[k]) for k in keys] for a, b in pairs]).mean(axis=0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(keys), size=(resamples, len(keys)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def per_task(pairs: list[tuple[Outcomes, Outcomes]], keys: list) -> dict[int, dict[str, float]]:
    """Each side's success per task, averaged over the seeds."""
    out = {}
    for t in sorted({k[0] for k in keys}):
        mine = [k for k in keys if k[0] == t]
        out[t] = {side: sum(pair[i][k] for pair in pairs for k in mine) / (len(pairs) * len(mine))
                  for i, side in enumerate(("a", "b"))}
    return out


def compare(a_runs: list[str], b_runs: list[str], resamples: int) -> dict:
    n = max(len(a_runs), len(b_runs))
    if {len(a_runs), len(b_runs)} - {1, n}:
        raise SystemExit(f"--a and --b need as many runs each, or one on a side, got {len(a_runs)} and {len(b_runs)}")
    a_loaded, b_loaded = ([load_outcomes(x) for x in runs] for runs in (a_runs, b_runs))
    pairs = [(a, b) for (a, _), (b, _) in zip(a_loaded * (n // len(a_loaded)), b_loaded * (n // len(b_loaded)), strict=True)]
    keys = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs)))
    if not keys:
        raise SystemExit("the runs share no (task, init state): no paired comparison")
    per_seed = []
    for a, b in pairs:
        test = mcnemar_exact([a[k] for k in keys], [b[k] for k in keys])
        per_seed.append({"a": sum(a[k] for k in keys) / len(keys), "b": sum(b[k] for k in keys) / len(keys), **test})
    mean_a = sum(s["a"] for s in per_seed) / len(per_seed)
    mean_b = sum(s["b"] for s in per_seed) / len(per_seed)
    return {"pairs": len(keys), "tasks": sorted({k[0] for k in keys}), "seeds": len(pairs),
            "per_seed": per_seed, "per_task": per_task(pairs, keys), "pooled": pooled_test(per_seed),
            "mean": {"a": mean_a, "b": mean_b, "difference": mean_b - mean_a,
                     "difference_95": bootstrap_interval(pairs, keys, resamples)},
            "runs": {"a": [m for _, m in a_loaded], "b": [m for _, m in b_loaded]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", required=True, help="run folders or eval reports, one per seed")
    ap.add_argument("--b", nargs="+", required=True, help="as many, paired by position, or one for all")
    ap.add_argument("--name", required=True)
    ap.add_argument("--label-a", default="a", dest="label_a")
    ap.add_argument("--label-b", default="b", dest="label_b")
    ap.add_argument("--resamples", type=int, default=10000)
    args = ap.parse_args()
    if args.resamples < 100:
        raise SystemExit(f"--resamples {args.resamples}: use at least 100 for a 95% interval")
    r = {"labels": {"a": args.label_a, "b": args.label_b}, **compare(args.a, args.b, args.resamples)}
    write_result(args.name, r)
    seeds = [Path(x).name for x in (args.a if len(args.a) > 1 else args.b)] + ["mean"]
    grouped_bars(args.name, seeds,
                 {args.label_a: ([100 * s["a"] for s in r["per_seed"]] + [100 * r["mean"]["a"]], "#999999"),
                  args.label_b: ([100 * s["b"] for s in r["per_seed"]] + [100 * r["mean"]["b"]], "#4477aa")},
                 "success (%)", f"{args.label_b} vs {args.label_a}, {r['pairs']} paired episodes per seed; "
                 f"pooled p = {r['pooled']['p_value']:.3g}")
    lo, hi = r["mean"]["difference_95"]
    print(f"{args.label_b} - {args.label_a}: {100 * r['mean']['difference']:+.1f} points [{100 * lo:+.1f}, "
          f"{100 * hi:+.1f}], pooled {r['pooled']['only_first']} / {r['pooled']['only_second']}, "
          f"p = {r['pooled']['p_value']:.3g}")


if __name__ == "__main__":
    main()
