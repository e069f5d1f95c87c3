"""Pictures of stored episodes for a person: a strip of head and wrist frames per chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mbpo_ray.replay.schema import frames
from mbpo_ray.replay.store import ReplayStore

LABEL_H = 14


def episode_strip(store: ReplayStore, key: int | str, max_frames: int = 16, scale: int = 1) -> Image.Image:
    """Head frames on the top row, wrist frames below, one column per chunk boundary.

    Long episodes are subsampled evenly to ``max_frames`` columns (first and last always kept).
    """
    meta = store.episode(key)
    table = store.read_episode(key, ["head", "wrist", "step", "success", "is_last"])
    s = store.spec.image_size
    head, wrist = frames(table, "head", s), frames(table, "wrist", s)
    n = table.num_rows
    cols = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    steps = table.column("step").to_pylist()
    success = table.column("success").to_pylist()
    w = s * scale
    title_h = LABEL_H + 4
    canvas = Image.new("RGB", (w * len(cols), title_h + 2 * w + LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    outcome = "success" if meta.success else "failure"
    draw.text((2, 2), f"{meta.suite} task {meta.task_id} | episode {meta.episode_id} | {meta.source} | "
                      f"{outcome} | rows: head (top), wrist (bottom)", fill="black")
    for j, i in enumerate(cols):
        for r, img in enumerate((head[i], wrist[i])):
            tile = Image.fromarray(img).resize((w, w), Image.NEAREST) if scale != 1 else Image.fromarray(img)
            canvas.paste(tile, (j * w, title_h + r * w))
        label = f"t={steps[i]}" + (" ok" if success[i] else "")
        draw.text((j * w + 2, title_h + 2 * w + 1), label, fill="green" if success[i] else "black")
    return canvas


def save_episode_strip(store: ReplayStore, key: int | str, out: str | Path, **kw) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    episode_strip(store, key, **kw).save(out)
    return out
