"""World models trained on different stores or splits, judged by their loss on the same held-out episodes.

    python benchmarks/common_heldout.py --store STORE --world-model NAME=CKPT [NAME=CKPT ...]
        [--name world_model_common_heldout]

Each world model's own held-out loss (``best.json``) is measured on its own split's held-out episodes,
so two models trained on different data cannot be compared by it. This reads every ``CKPT/split.json``
and keeps the episodes of ``STORE`` that no named model trained on (with at least one chunk), then asks
each model, with its own tokenizer and token layout, for its per-token cross-entropy on their
transitions: the image codes of the head and wrist views and the reward answer, unweighted (as
``heldout_losses`` with weights 1), over all of them and split by source (demonstrations, policy
rollouts). Writes benchmarks/results/NAME.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import no_home, provenance, save_figure, write_result  # noqa: E402

PARTS = ("head", "wrist", "reward")


def common_heldout(store, checkpoints: dict[str, str]) -> dict[str, list[str]]:
    """The ids of ``store``'s episodes (with chunks) that no checkpoint's ``split.json`` trains on, by
    source, in store order."""
    trained: set[str] = set()
    for name, ckpt in checkpoints.items():
        split = Path(ckpt) / "split.json"
        if not split.is_file():
            raise SystemExit(f"--world-model {name}={ckpt}: no split.json there (a folder written by "
                             "`mbpo-ray train-world-model`)")
        trained |= set(json.loads(split.read_text())["train"])
    out: dict[str, list[str]] = {}
    for e in store.episodes:
        if e.chunks > 0 and e.episode_id not in trained:
            out.setdefault(e.source, []).append(e.episode_id)
    if not out:
        raise SystemExit("every episode of the store is in some model's training split: nothing to judge on")
    return out


def losses(ckpt: str, store, ids: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """``ckpt``'s mean cross-entropy per part on the transitions of episodes ``ids`` (by source): over
    all of them (in source order) and per source, the model loaded and the episodes tokenized once."""
    import copy

    import numpy as np
    from transformers import AutoModelForCausalLM

    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.layout import TokenLayout
    from mbpo_ray.world_model.tokenizer import ImageTokenizer
    from mbpo_ray.world_model.train import TokenData, heldout_losses

    layout = TokenLayout.load(Path(ckpt) / "layout.json")
    every = [i for v in ids.values() for i in v]
    data = TokenData(load_episodes(store, every), ImageTokenizer.load(Path(ckpt) / "tokenizer"), layout)
    model = AutoModelForCausalLM.from_pretrained(Path(ckpt) / "model")
    source = np.array([src for src, v in ids.items() for _ in v])[data.ep.row_episode[data.rows]]

    def judged(part: TokenData) -> dict[str, float]:
        out = heldout_losses(model, part, layout)
        return {"transitions": int(len(part.rows)), **{k: round(out[k], 4) for k in PARTS}}

    def of(src: str) -> TokenData:  # the source's transitions, in order, without tokenizing them again
        keep = np.flatnonzero(source == src)
        part = copy.copy(data)
        part.rows = data.rows[keep]
        part.prompts, part.targets = [data.prompts[i] for i in keep], [data.targets[i] for i in keep]
        return part

    return {"all": judged(data), **{src: judged(of(src)) for src in ids}}


def plot(name: str, rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sources = list(next(iter(rows.values())))
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False)
    width = 0.8 / len(rows)
    for ax, src in zip(axes[0], sources, strict=True):
        for j, (model, r) in enumerate(rows.items()):
            ax.bar(np.arange(2) + j * width, [r[src][p] for p in ("head", "wrist")], width, label=model)
        ax.set_xticks(np.arange(2) + width * (len(rows) - 1) / 2, ["head codes", "wrist codes"])
        ax.set_ylabel("cross-entropy per token (nats)")
        ax.set_title(f"{src}: {next(iter(rows.values()))[src]['transitions']} held-out transitions", fontsize=9)
        ax.legend(fontsize=8)
    save_figure(fig, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--world-model", nargs="+", required=True, dest="world_model", metavar="NAME=CKPT")
    ap.add_argument("--name", default="world_model_common_heldout")
    args = ap.parse_args()
    if any("=" not in x for x in args.world_model):
        ap.error("--world-model takes NAME=CKPT pairs")
    models = {k: os.path.expanduser(v) for k, v in (x.split("=", 1) for x in args.world_model)}
    prov = provenance()
    from mbpo_ray.replay import ReplayStore

    t0 = time.time()
    store = ReplayStore.open(os.path.expanduser(args.store))
    ids = common_heldout(store, models)
    rows = {}
    for name, ckpt in models.items():
        rows[name] = losses(ckpt, store, ids)
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in rows[name]["all"].items()), flush=True)
    result = {"episodes": {src: len(v) for src, v in ids.items()}, "models": {k: no_home(v) for k, v in models.items()},
              "losses": rows,
              "minutes": round((time.time() - t0) / 60, 1), **prov}
    write_result(args.name, result, prov)
    plot(args.name, rows)


if __name__ == "__main__":
    main()
