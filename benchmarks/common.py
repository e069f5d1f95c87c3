"""Helpers shared by the benchmarks: result files that record the command and commit that made them."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# MBPO_RESULTS_DIR: somewhere else (benchmarks/gpu_check.sh --dry writes its toy results there)
RESULTS = Path(os.environ.get("MBPO_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def no_home(text: str) -> str:
    """``text`` with this machine's home folder written ``~`` (results name no path of the machine)."""
    return text.replace(str(Path.home()), "~")


def provenance() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root,  # untracked files count
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):  # a copy of the tree without git: MBPO_COMMIT names it
        commit, dirty = os.environ.get("MBPO_COMMIT", "unknown"), False
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(root):
        script = script.relative_to(root)
    args = [no_home(shlex.quote(a)) for a in sys.argv[1:]]
    return {
        "command": " ".join(["python", str(script), *args]),
        "commit": commit + ("+dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


def add_loop_inputs(ap) -> None:
    """The flags of benchmarks that start the loop from existing checkpoints and a store."""
    ap.add_argument("--policy", required=True, help="an SFT policy checkpoint")
    ap.add_argument("--world-model", required=True, help="a train-world-model checkpoint folder")
    ap.add_argument("--store", required=True, help="a replay store with demonstrations of the tasks")


def draw_start_states(store, n: int, tasks: str, sampler: str, seed: int, mc=None):
    """(episode, chunk) arrays of ``n`` start states, an equal share per task of ``tasks`` (the first
    tasks take the remainder), drawn by ``SAMPLERS[sampler]`` at iteration 0 with the mbpo settings
    ``mc`` (default: the defaults), from one rng seeded ``seed``."""
    import numpy as np

    from mbpo_ray.config import build_config, parse_task_ids
    from mbpo_ray.replay.samplers import SAMPLERS

    rng = np.random.default_rng(seed)
    ids = parse_task_ids(tasks)
    counts = [n // len(ids) + (k < n % len(ids)) for k in range(len(ids))]
    mc = mc or build_config().mbpo
    picks = [SAMPLERS[sampler](store.episodes, c, rng, t, mc=mc) for c, t in zip(counts, ids, strict=True)]
    return np.concatenate([p[0] for p in picks]), np.concatenate([p[1] for p in picks])


def draw_sim_starts(args, columns: tuple[str, ...] = ()):
    """Start states to run in LIBERO, drawn as :func:`draw_start_states` draws them with ``args``
    (``store``, ``start_states``, ``tasks``, ``sampler``, ``seed``, ``start_window``, ``fail_weight``):
    (store, episodes, chunks, the rows' ``columns`` + ``sim_state``, the simulator states)."""
    import numpy as np

    from mbpo_ray.config import build_config
    from mbpo_ray.replay import ReplayStore

    store = ReplayStore.open(os.path.expanduser(args.store))
    mc = build_config(overrides={"mbpo": {"start_window": args.start_window, "fail_weight": args.fail_weight}}).mbpo
    ep, chunk = draw_start_states(store, args.start_states, args.tasks, args.sampler, args.seed, mc)
    table = store.read_start_states(ep, chunk, [*columns, "sim_state"])
    sims = [np.asarray(s, np.float64) for s in table.column("sim_state").to_pylist()]
    if any(len(s) == 0 for s in sims):
        raise SystemExit("some start states have no recorded simulator state: use a store written by "
                         "`mbpo-ray collect` or `mbpo-ray eval --to-store`")
    return store, ep, chunk, table, sims


def add_branch_start_args(ap, start_states: int) -> None:
    """The arguments of a benchmark that branches the policy in LIBERO from start states drawn by
    :func:`draw_sim_starts` (``--group-size`` branches from each), run by ``--workers`` env runners."""
    ap.add_argument("--policy", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--tasks", default="0-3")
    ap.add_argument("--start-states", type=int, default=start_states, dest="start_states")
    ap.add_argument("--group-size", type=int, default=8, dest="group_size")
    from mbpo_ray.config import START_SAMPLERS

    ap.add_argument("--sampler", default="reverse", choices=START_SAMPLERS)
    ap.add_argument("--start-window", type=int, default=8, dest="start_window")
    ap.add_argument("--fail-weight", type=float, default=1.0, dest="fail_weight")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)


def mcnemar_exact(a: list[bool], b: list[bool]) -> dict:
    """Exact two-sided McNemar test of paired outcomes (the same init states under two policies):
    only the discordant pairs count (:func:`sign_test_p`)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    return {"p_value": sign_test_p(only_a, only_b), "only_first": only_a, "only_second": only_b, "pairs": len(a)}


def sign_test_p(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test of discordant pair counts: P(a Binomial(n, 1/2) is as unbalanced)."""
    from math import comb

    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def eval_outcomes(report: dict) -> dict[tuple[int, int], bool]:
    """(task, init state) -> success, from an ``mbpo-ray eval`` report (init states 0..episodes-1)."""
    out = {}
    for t, r in report["tasks"].items():
        won = set(r["successes"])
        out.update({(int(t), i): i in won for i in range(r["episodes"])})
    return out


def last_evaluation(run: Path) -> int:
    """The iteration of an ``mbpo-ray train`` run's last evaluation (``OUT/eval/iter_N.json``)."""
    done = [int(f.stem.split("_")[1]) for f in (run / "eval").glob("iter_*.json")]
    if not done:
        raise SystemExit(f"{run}: a run folder with no evaluation (eval/iter_*.json); finish the run first")
    return max(done)


def run_outcomes(run: Path, iteration: int) -> dict[tuple[int, int], bool]:
    """(task, init state) -> success of an ``mbpo-ray train`` run's evaluation at ``iteration``."""
    path = run / "eval" / f"iter_{iteration}.json"
    try:
        episodes = json.loads(path.read_text())["episodes"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"{path}: not readable JSON ({e}); rerun what wrote it") from None
    return {(int(e["task_id"]), int(e["init_state"])): bool(e["success"]) for e in episodes}


def mcnemar_on(a: dict, b: dict, keys: list) -> dict:
    """:func:`mcnemar_exact` of two keyed outcome maps on ``keys``."""
    return mcnemar_exact([a[k] for k in keys], [b[k] for k in keys])


def read_result(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def write_result(name: str, data: dict, prov: dict | None = None) -> Path:
    """``benchmarks/results/NAME.json``: ``data`` and its provenance (``prov``, taken when the run
    started, for a result rewritten as it grows: its own earlier writes would make the tree dirty)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, **(prov or provenance())}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def bar_chart(name: str, labels: list[str], values: list[float], ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(max(5.0, 2.0 * len(labels) + 1.5), 3.6), dpi=120)
    bars = ax.bar([textwrap.fill(x, 18) for x in labels], values, color="#4477aa")
    ax.bar_label(bars, labels=[f"{v:,.1f}" if v < 100 else f"{v:,.0f}" for v in values], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    return save_figure(fig, name)


def grouped_bars(name: str, groups: list[str], series: dict[str, tuple[list[float], str]], ylabel: str,
                 title: str, log: bool = False, figsize: tuple[float, float] = (7, 4)) -> Path:
    """One cluster of bars per group (x tick labels ``groups``), one bar per series ``label -> (values,
    colour)``, each labelled with its value; ``RESULTS/<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x, width = np.arange(len(groups)), 0.8 / len(series)
    fig, ax = plt.subplots(figsize=figsize, dpi=120)
    for i, (label, (values, colour)) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label, color=colour)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, name)


def save_figure(fig, name: str) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")
    return path
