"""Small LeRobot datasets written in exactly the published layouts (v2.1: a parquet per episode, PNG
bytes in the parquet or an MP4 per camera per episode; v3.0: many episodes per parquet and MP4,
located through meta/episodes), from synthetic episodes; MP4s are encoded with PyAV."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mbpo_ray.replay.video import Mp4Writer

FPS = 10


def frames(t_len: int, size: int, seed: int) -> np.ndarray:
    """Smooth gradients with a soft blob that moves: natural-image-like for a video codec (no hard
    colour edges, which 4:2:0 chroma blurs), every frame different."""
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(t_len):
        img = np.stack([x * 160 + 20, y * 140 + 30, (x + y) * 70 + 10 * seed], axis=-1)
        c = (0.2 + 0.6 * ((0.07 * t + 0.13 * seed) % 1.0))
        img += 60 * np.exp(-((x - c) ** 2 + (y - c) ** 2) / 0.02)[..., None]
        out.append(img)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def episode(t_len: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(head=frames(t_len, size, seed), wrist=frames(t_len, size, seed + 50)[:, ::-1].copy(),
                state=rng.standard_normal((t_len, 8)).astype(np.float32),
                actions=rng.uniform(-1, 1, (t_len, 7)).astype(np.float32))


def _png(img: np.ndarray) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _cam(kind: str, size: int) -> dict:
    return {"dtype": kind, "shape": [size, size, 3], "names": ["height", "width", "channel"]}


def _features(cams: dict[str, str], kind: str, size: int, state: str, action: str) -> dict:
    f = {key: _cam(kind, size) for key in cams.values()}
    f[state] = {"dtype": "float32", "shape": [8], "names": None}
    f[action] = {"dtype": "float32", "shape": [7], "names": None}
    for k in ("timestamp",):
        f[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        f[k] = {"dtype": "int64", "shape": [1], "names": None}
    return f


def _rows(ep: dict, cams: dict[str, str], images: bool, state: str, action: str, k: int, first: int,
          task: int) -> dict:
    t_len = len(ep["actions"])
    cols = {state: pa.array(list(ep["state"]), type=pa.list_(pa.float32())),
            action: pa.array(list(ep["actions"]), type=pa.list_(pa.float32())),
            "timestamp": pa.array((np.arange(t_len) / FPS).astype(np.float32)),
            "frame_index": pa.array(np.arange(t_len)), "episode_index": pa.array(np.full(t_len, k)),
            "index": pa.array(np.arange(first, first + t_len)), "task_index": pa.array(np.full(t_len, task))}
    if images:
        for view, key in cams.items():
            cols[key] = pa.array([_png(f) for f in ep[view]], type=IMAGE)
    return cols


def write_v21(root: Path, episodes: list[dict], tasks: list[str], video: bool, size: int,
              cams=None, state: str = "state", action: str = "actions") -> Path:
    """openpi's LIBERO keys by default (image, wrist_image, state, actions), one parquet per episode."""
    cams = cams or {"head": "image", "wrist": "wrist_image"}
    info = {"codebase_version": "v2.1", "robot_type": "panda", "total_episodes": len(episodes), "fps": FPS,
            "chunks_size": 1000, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4" if video else None,
            "features": _features(cams, "video" if video else "image", size, state, action)}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                        for i, t in enumerate(tasks)))
    lines, first = [], 0
    for k, ep in enumerate(episodes):
        task = ep.get("task", 0)
        path = root / info["data_path"].format(episode_chunk=0, episode_index=k)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(_rows(ep, cams, not video, state, action, k, first, task)), path)
        if video:
            for view, key in cams.items():
                w = Mp4Writer(root / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=k), FPS)
                w.add(ep[view])
                w.close()
        lines.append(json.dumps({"episode_index": k, "tasks": [tasks[task]], "length": len(ep["actions"])}) + "\n")
        first += len(ep["actions"])
    (root / "meta" / "episodes.jsonl").write_text("".join(lines))
    return root


def write_v30(root: Path, episodes: list[dict], tasks: list[str], size: int, per_file: int = 2) -> Path:
    """Camera MP4s and parquet files holding ``per_file`` episodes each, tasks.parquet with the task
    strings as the pandas index."""
    cams = {"head": "observation.images.front", "wrist": "observation.images.wrist"}
    info = {"codebase_version": "v3.0", "robot_type": "panda", "total_episodes": len(episodes), "fps": FPS,
            "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": _features(cams, "video", size, "observation.state", "action")}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    pandas = {"index_columns": ["__index_level_0__"], "columns": []}
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas).encode()})
    pq.write_table(pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}, schema=schema),
                   root / "meta" / "tasks.parquet")
    meta, first = [], 0
    for f0 in range(0, len(episodes), per_file):
        fi = f0 // per_file
        writers = {v: Mp4Writer(root / info["video_path"].format(video_key=key, chunk_index=0, file_index=fi), FPS)
                   for v, key in cams.items()}
        tables = []
        for k in range(f0, min(f0 + per_file, len(episodes))):
            ep, n = episodes[k], len(episodes[k]["actions"])
            row = {"episode_index": k, "tasks": [tasks[ep.get("task", 0)]], "length": n, "data/chunk_index": 0,
                   "data/file_index": fi, "dataset_from_index": first, "dataset_to_index": first + n}
            for v, key in cams.items():
                start = writers[v].frames / FPS
                writers[v].add(ep[v])
                row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": fi,
                        f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + n / FPS}
            meta.append(row)
            tables.append(pa.table(_rows(ep, cams, False, "observation.state", "action", k, first, ep.get("task", 0))))
            first += n
        for w in writers.values():
            w.close()
        path = root / info["data_path"].format(chunk_index=0, file_index=fi)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), path)
    pq.write_table(pa.Table.from_pylist(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return root
