"""Two `mbpo-ray eval` reports on the same init states, compared episode by episode.

    python benchmarks/paired_evals.py --a EVAL_A/eval.json --b EVAL_B/eval.json --name NAME \\
        [--label-a TEXT] [--label-b TEXT]

Pairs the outcome of every (task, init state) the two reports share and writes
benchmarks/results/NAME.json: success per task and overall for each, the discordant pairs and the
exact McNemar p-value. Used for the SFT policy evaluated on raw frames and on frames round-tripped
through the world model's tokenizer (``mbpo-ray eval --frame-codec``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import eval_outcomes, mcnemar_on, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--label-a", default="a")
    ap.add_argument("--label-b", default="b")
    args = ap.parse_args()
    ra, rb = (json.loads(Path(os.path.expanduser(p)).read_text()) for p in (args.a, args.b))
    a, b = eval_outcomes(ra), eval_outcomes(rb)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit("the two reports share no (task, init state)")
    test = mcnemar_on(a, b, keys)
    per_task = {t: {args.label_a: sum(a[k] for k in keys if k[0] == t) / sum(1 for k in keys if k[0] == t),
                    args.label_b: sum(b[k] for k in keys if k[0] == t) / sum(1 for k in keys if k[0] == t)}
                for t in sorted({k[0] for k in keys})}
    result = {"suite": ra["suite"], "pairs": len(keys), "labels": [args.label_a, args.label_b],
              "success": {args.label_a: sum(a[k] for k in keys) / len(keys), args.label_b: sum(b[k] for k in keys) / len(keys)},
              "per_task": per_task, "paired": test, "checkpoints": [ra["checkpoint"], rb["checkpoint"]],
              "greedy": [ra["greedy"], rb["greedy"]]}
    write_result(args.name, result)
    print(result["success"], "p =", round(test["p_value"], 4))


if __name__ == "__main__":
    main()
