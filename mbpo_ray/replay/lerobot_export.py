"""Export a replay store as a LeRobot v3.0 dataset, so LeRobot's tools read real and imagined episodes.

The store keeps an observation per action chunk, not per control step, so a row of the dataset is a
chunk: ``observation.images.head`` / ``observation.images.wrist`` (MP4, or PNG bytes in the parquet
with ``images="png"``), ``observation.state`` (8), ``action`` (H, 7; zero past ``action_valid_steps``),
``next.reward`` / ``next.success`` / ``next.done``; an episode's last row is its terminal observation
(``action_valid_steps`` 0). ``fps`` is the chunk rate (LIBERO's 20 Hz control over H). The episode
metadata carries the store's episode id, source, suite, task id and policy version (``mbpo/*``
columns), so :mod:`mbpo_ray.replay.lerobot` reads the episodes back exactly as they were.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mbpo_ray.replay.schema import ReplayError
from mbpo_ray.replay.store import ReplayStore

CONTROL_HZ = 20  # LIBERO's controller rate
CAMERAS = {"head": "observation.images.head", "wrist": "observation.images.wrist"}
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder, as LeRobot
CRF = 12  # H.264 quality; LIBERO's 128 px frames come back at mean 42 / 38 dB (head / wrist), worst frame 36.6 dB


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _features(spec, fps: int, images: str) -> dict:
    s, h = spec.image_size, spec.chunk_size
    cam = {"dtype": "video" if images == "mp4" else "image", "shape": [s, s, 3], "names": ["height", "width", "channels"]}
    if images == "mp4":
        cam["info"] = {"video.height": s, "video.width": s, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                       "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}
    scalar = {"shape": [1], "names": None}
    return {
        CAMERAS["head"]: cam, CAMERAS["wrist"]: dict(cam),
        "observation.state": {"dtype": "float32", "shape": [spec.proprio_dim],
                              "names": ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_0", "finger_1"]},
        "action": {"dtype": "float32", "shape": [h, spec.action_dim], "names": None},
        "action_valid_steps": {"dtype": "int64", **scalar},
        "next.reward": {"dtype": "float32", **scalar},
        "next.success": {"dtype": "bool", **scalar},
        "next.done": {"dtype": "bool", **scalar},
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


@dataclass
class _Stats:
    """Running min / max / sum / sum of squares per feature (images: per channel, in [0, 1])."""

    acc: dict = field(default_factory=dict)

    def add(self, name: str, x: np.ndarray, axes: tuple[int, ...]) -> None:
        x = x.astype(np.float64)
        new = (x.min(axis=axes), x.max(axis=axes), x.sum(axis=axes), (x * x).sum(axis=axes),
               int(np.prod([x.shape[a] for a in axes])))
        if name not in self.acc:
            self.acc[name] = list(new)
            return
        a = self.acc[name]
        a[0], a[1] = np.minimum(a[0], new[0]), np.maximum(a[1], new[1])
        a[2], a[3], a[4] = a[2] + new[2], a[3] + new[3], a[4] + new[4]

    def to_json(self, image_keys: set[str]) -> dict:
        out = {}
        for name, (lo, hi, s, ss, n) in self.acc.items():
            mean = s / n
            std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
            shape = (-1, 1, 1) if name in image_keys else (-1,)
            out[name] = {k: np.asarray(v).reshape(shape).tolist() for k, v in
                         (("min", lo), ("max", hi), ("mean", mean), ("std", std))} | {"count": [n]}
        return out


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it with pandas: task strings as the index, task_index a column."""
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "pandas_version": "2.2.3", "creator":
                   {"library": "pyarrow", "version": pa.__version__}, "columns": [
                       {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                        "metadata": None},
                       {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                        "metadata": None}]}
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": list(range(len(tasks))), "task": tasks}, schema=schema)


def export_lerobot(store: ReplayStore, out: str | Path, images: str = "mp4", episodes_per_file: int = 1000,
                   progress=None) -> dict:
    """Write ``store`` as a LeRobot v3.0 dataset in ``out`` (a new or empty folder); info.json's dict."""
    from mbpo_ray.replay.video import Mp4Writer

    out = Path(out)
    if images not in ("mp4", "png"):
        raise ReplayError(f"images={images!r} is not allowed: mp4 or png")
    if out.exists() and any(out.iterdir()):
        raise ReplayError(f"{out}: exists and is not empty; export into a new folder")
    spec, eps = store.spec, store.episodes
    if not eps:
        raise ReplayError(f"{store.root}: the store holds no episodes")
    fps = max(1, round(CONTROL_HZ / spec.chunk_size))
    features = _features(spec, fps, images)
    tasks: list[str] = []
    stats, ep_rows, index = _Stats(), [], 0
    for first in range(0, len(eps), episodes_per_file):
        f = first // episodes_per_file
        loc = dict(chunk_index=f // CHUNKS_SIZE, file_index=f % CHUNKS_SIZE)
        writers = {c: Mp4Writer(out / VIDEO_PATH.format(video_key=key, **loc), fps, crf=CRF)
                   for c, key in CAMERAS.items()} if images == "mp4" else {}
        data = []
        try:
            for k in range(first, min(first + episodes_per_file, len(eps))):
                t = store.read_episode(eps[k].episode_id)
                entry, table = _episode(t, spec, k, index, tasks, fps, loc, writers, images, stats)
                ep_rows.append(entry)
                data.append(table)
                index += len(t)
                if progress is not None:
                    progress.update(1)
        finally:
            for w in writers.values():
                w.close()
        path = out / DATA_PATH.format(**loc)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(data), path)
    return _write_meta(out, spec, fps, features, tasks, ep_rows, index, stats)


def _episode(t: pa.Table, spec, k: int, index: int, tasks: list[str], fps: int, loc: dict, writers: dict,
             images: str, stats: _Stats) -> tuple[dict, pa.Table]:
    """One episode: its metadata row (videos appended to the open writers) and its data rows."""
    row = t.slice(0, 1).to_pylist()[0]
    if row["instruction"] not in tasks:
        tasks.append(row["instruction"])
    n, s = len(t), spec.image_size
    frames = {c: np.asarray(t.column(c).combine_chunks().flatten()).reshape(n, s, s, 3) for c in CAMERAS}
    entry = {"episode_index": k, "tasks": [row["instruction"]], "length": n,
             "data/chunk_index": loc["chunk_index"], "data/file_index": loc["file_index"],
             "dataset_from_index": index, "dataset_to_index": index + n}
    for c, key in CAMERAS.items():
        if images == "mp4":
            start = writers[c].frames / fps
            writers[c].add(frames[c])
            entry |= {f"videos/{key}/chunk_index": loc["chunk_index"], f"videos/{key}/file_index": loc["file_index"],
                      f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + n / fps}
        stats.add(key, frames[c] / 255.0, (0, 1, 2))
    entry |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "mbpo/episode_id": row["episode_id"],
              "mbpo/source": row["source"], "mbpo/suite": row["suite"], "mbpo/task_id": int(row["task_id"]),
              "mbpo/policy_version": int(row["policy_version"])}
    return entry, _episode_data(t, spec, k, index, tasks.index(row["instruction"]), fps, frames, images, stats)


def _episode_data(t: pa.Table, spec, k: int, index: int, task: int, fps: int, frames: dict, images: str,
                  stats: _Stats) -> pa.Table:
    n, h, a = len(t), spec.chunk_size, spec.action_dim
    actions = np.asarray(t.column("actions").combine_chunks().flatten(), dtype=np.float32).reshape(n, h, a)
    proprio = np.asarray(t.column("proprio").combine_chunks().flatten(), dtype=np.float32).reshape(n, -1)
    cols = {
        "observation.state": pa.array(list(proprio), type=pa.list_(pa.float32())),
        "action": pa.array([list(x) for x in actions], type=pa.list_(pa.list_(pa.float32()))),
        "action_valid_steps": pa.array(t.column("num_actions").to_numpy().astype(np.int64)),
        "next.reward": pa.array(t.column("reward").to_numpy().astype(np.float32)),
        "next.success": t.column("success").combine_chunks(),
        "next.done": t.column("done").combine_chunks(),
        "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "episode_index": pa.array(np.full(n, k, np.int64)),
        "index": pa.array(np.arange(index, index + n, dtype=np.int64)),
        "task_index": pa.array(np.full(n, task, np.int64)),
    }
    if images == "png":
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for c, key in CAMERAS.items():
            cols[key] = pa.array([{"bytes": _png(f), "path": None} for f in frames[c]], type=image)
    for name, x in (("observation.state", proprio), ("action", actions.reshape(n, -1))):
        stats.add(name, x, (0,))
    return pa.table(cols)


def _write_meta(out: Path, spec, fps: int, features: dict, tasks: list[str], ep_rows: list[dict], frames: int,
                stats: _Stats) -> dict:
    meta = out / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ep_rows), out / EPISODES_PATH)
    pq.write_table(_tasks_table(tasks), meta / "tasks.parquet")
    info = {
        "codebase_version": "v3.0", "robot_type": "panda", "total_episodes": len(ep_rows), "total_frames": frames,
        "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": fps, "splits": {"train": f"0:{len(ep_rows)}"},
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if features[CAMERAS["head"]]["dtype"] == "video" else None,
        "features": features,
        "mbpo": {"chunk_size": spec.chunk_size, "control_hz": CONTROL_HZ, "rows": "one per action chunk"},
    }
    (meta / "info.json").write_text(json.dumps(info, indent=2))
    (meta / "stats.json").write_text(json.dumps(stats.to_json(set(CAMERAS.values())), indent=2))
    return info
