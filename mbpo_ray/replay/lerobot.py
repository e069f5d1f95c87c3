"""Import LeRobot datasets (v2.1 and v3.0) into a replay store.

Both versions describe themselves in ``meta/info.json``: ``codebase_version``, ``fps``, ``features``
(name -> ``dtype`` / ``shape``; cameras have dtype ``image``, frames as PNG bytes in the parquet, or
``video``, frames in MP4 files), and the path templates ``data_path`` / ``video_path``.

* **v2.1**: one parquet per episode (``data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet``),
  one MP4 per camera per episode, ``meta/episodes.jsonl`` (index, tasks, length) and
  ``meta/tasks.jsonl`` (task_index, task).
* **v3.0**: many episodes per parquet and per MP4 (``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet``),
  located by ``meta/episodes/*/*.parquet`` (``data/chunk_index``, ``data/file_index``,
  ``dataset_from_index``, ``dataset_to_index``, ``videos/<camera>/{chunk_index,file_index,from_timestamp,to_timestamp}``),
  tasks in ``meta/tasks.parquet``.

A row of the data is one control step: the observation before ``action``. Episodes are cut into
chunks as the LIBERO HDF5 import does (:func:`mbpo_ray.replay.episode.steps_to_episode`). A dataset
written by :mod:`mbpo_ray.replay.lerobot_export` has one row per chunk instead (its ``action`` is an
``(H, 7)`` chunk); it is read back row for row. Frames are taken as upright (as LIBERO's evaluation
shows them, and as the openpi LIBERO set stores them); ``rotate180`` turns raw-renderer frames.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mbpo_ray.replay.schema import ReplayError, StoreSpec

VERSIONS = ("v2.0", "v2.1", "v3.0")
HEAD_NAMES = ("observation.images.head", "observation.images.image", "image", "observation.images.agentview",
              "observation.images.front", "observation.images.top", "agentview_rgb")
WRIST_NAMES = ("observation.images.wrist", "observation.images.wrist_image", "wrist_image",
               "observation.images.eye_in_hand", "eye_in_hand_rgb")
STATE_NAMES = ("observation.state", "state")
ACTION_NAMES = ("action", "actions")


@dataclass(frozen=True)
class KeyMap:
    """Which dataset features are the store's head and wrist frames, proprio and actions
    (None: found by name, see ``HEAD_NAMES`` etc.; ``state=""``: no proprio, zeros stored)."""

    head: str | None = None
    wrist: str | None = None
    state: str | None = None
    action: str | None = None


@dataclass
class Episode:
    index: int
    length: int
    tasks: list[str]
    data_file: Path
    rows: tuple[int, int] | None = None  # v3.0: the episode's global ``index`` range in its file
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # camera -> (file, from_timestamp)
    extra: dict = field(default_factory=dict)  # columns this project's export adds (source, episode id)


@dataclass
class Dataset:
    root: Path
    version: str
    fps: float
    features: dict
    keys: KeyMap
    tasks: dict[int, str]
    episodes: list[Episode]

    @property
    def chunk_rows(self) -> bool:
        """One row per action chunk (an ``(H, 7)`` action), as this project exports."""
        return len(self.features[self.keys.action]["shape"]) == 2


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReplayError(f"{path}: missing; a LeRobot dataset holds meta/info.json and its metadata") from None
    except ValueError as exc:
        raise ReplayError(f"{path}: not valid JSON ({exc})") from None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise ReplayError(f"{path}: missing (a LeRobot v2.1 dataset lists its tasks and episodes in meta/*.jsonl)")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise ReplayError(f"{path}: not valid JSON lines ({exc})") from None


def _read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise ReplayError(f"{path}: missing; the dataset's metadata points to it")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReplayError(f"{path}: not a readable parquet file ({exc})") from None


def _pick(features: dict, given: str | None, names: tuple[str, ...], what: str, option: str,
          cameras: bool = False) -> str:
    kinds = ("image", "video")
    if given is not None:
        if given not in features:
            raise ReplayError(f"{option}={given!r}: the dataset has no such feature; it has {', '.join(features)}")
        if cameras and features[given]["dtype"] not in kinds:
            raise ReplayError(f"{option}={given!r} is a {features[given]['dtype']} feature, not a camera")
        return given
    for name in names:
        if name in features and (not cameras or features[name]["dtype"] in kinds):
            return name
    if cameras:
        hint = [k for k, v in features.items() if v["dtype"] in kinds]
        hint_text = f"its cameras are {', '.join(hint)}" if hint else "it has no camera features"
    else:
        hint_text = f"its features are {', '.join(features)}"
    raise ReplayError(f"cannot tell which feature is the {what} ({hint_text}); name it with {option}")


def resolve_keys(features: dict, keys: KeyMap) -> KeyMap:
    head = _pick(features, keys.head, HEAD_NAMES, "head camera", "--head-key", cameras=True)
    wrist = _pick(features, keys.wrist, WRIST_NAMES, "wrist camera", "--wrist-key", cameras=True)
    state = keys.state if keys.state == "" else _pick(features, keys.state, STATE_NAMES, "state", "--state-key")
    action = _pick(features, keys.action, ACTION_NAMES, "action", "--action-key")
    return KeyMap(head, wrist, state, action)


def _tasks(root: Path, version: str) -> dict[int, str]:
    if version != "v3.0":
        return {int(r["task_index"]): str(r["task"]) for r in _jsonl(root / "meta" / "tasks.jsonl")}
    table = _read_parquet(root / "meta" / "tasks.parquet")
    names = table.column_names
    text_col = "task" if "task" in names else None
    if text_col is None:  # pandas writes the task strings as the frame's index
        meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
        text_col = index[0] if index else next((c for c in names if pa.types.is_string(table.schema.field(c).type)), None)
    if text_col is None or "task_index" not in names:
        raise ReplayError(f"{root}/meta/tasks.parquet: needs a task_index column and the task strings")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True))


def _v21_episodes(root: Path, info: dict, cameras: list[str]) -> list[Episode]:
    out = []
    size = int(info.get("chunks_size", 1000))
    for r in _jsonl(root / "meta" / "episodes.jsonl"):
        idx = int(r["episode_index"])
        fmt = dict(episode_chunk=idx // size, episode_index=idx)
        videos = {c: (root / info["video_path"].format(video_key=c, **fmt), 0.0) for c in cameras}
        out.append(Episode(idx, int(r["length"]), list(r.get("tasks", [])), root / info["data_path"].format(**fmt),
                           videos=videos))
    return out


def _v30_episodes(root: Path, info: dict, cameras: list[str]) -> list[Episode]:
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise ReplayError(f"{root}/meta/episodes: no episode parquet files (a v3.0 dataset lists its episodes there)")
    out = []
    for f in files:
        for r in _read_parquet(f).to_pylist():
            videos = {}
            for c in cameras:
                loc = dict(chunk_index=r[f"videos/{c}/chunk_index"], file_index=r[f"videos/{c}/file_index"])
                videos[c] = (root / info["video_path"].format(video_key=c, **loc), float(r[f"videos/{c}/from_timestamp"]))
            data = dict(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
            extra = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("mbpo/")}
            out.append(Episode(int(r["episode_index"]), int(r["length"]), list(r.get("tasks") or []),
                               root / info["data_path"].format(**data),
                               (int(r["dataset_from_index"]), int(r["dataset_to_index"])), videos, extra))
    return sorted(out, key=lambda e: e.index)


def open_dataset(root: str | Path, keys: KeyMap = KeyMap()) -> Dataset:
    """Read a LeRobot dataset's metadata; nothing is decoded yet."""
    root = Path(root)
    info = _json(root / "meta" / "info.json")
    version = str(info.get("codebase_version", ""))
    if version not in VERSIONS:
        raise ReplayError(f"{root}: codebase_version {version!r} is not supported; this reads {', '.join(VERSIONS)} "
                          "(convert older datasets with LeRobot's conversion scripts)")
    for k in ("features", "data_path", "fps"):
        if k not in info:
            raise ReplayError(f"{root}/meta/info.json: no {k!r}")
    features = {k: {**v, "shape": list(v.get("shape", []))} for k, v in info["features"].items()}
    keys = resolve_keys(features, keys)
    cameras = [k for k in (keys.head, keys.wrist) if features[k]["dtype"] == "video"]
    if cameras and "video_path" not in info:
        raise ReplayError(f"{root}/meta/info.json: video features but no video_path")
    try:
        episodes = (_v30_episodes if version == "v3.0" else _v21_episodes)(root, info, cameras)
    except KeyError as exc:
        raise ReplayError(f"{root}/meta: the episode metadata has no {exc} (a LeRobot {version} dataset lists it "
                          "per episode)") from None
    if not episodes:
        raise ReplayError(f"{root}: the dataset lists no episodes")
    return Dataset(root, version, float(info["fps"]), features, keys, _tasks(root, version), episodes)


def check_sizes(ds: Dataset, spec: StoreSpec) -> None:
    """The action (and state) sizes match the store's, before anything is written."""
    shape = ds.features[ds.keys.action]["shape"]
    if shape[-1] != spec.action_dim or len(shape) > 2 or (len(shape) == 2 and shape[0] != spec.chunk_size):
        want = f"({spec.action_dim},) per step, or ({spec.chunk_size}, {spec.action_dim}) per chunk"
        raise ReplayError(f"{ds.keys.action} has shape {tuple(shape)}; this store takes actions of {want} "
                          "(--chunk-size sets the chunk; name another feature with --action-key)")
    if ds.keys.state and ds.features[ds.keys.state]["shape"] != [spec.proprio_dim]:
        raise ReplayError(f"{ds.keys.state} has shape {tuple(ds.features[ds.keys.state]['shape'])}; the store's "
                          f"proprio is ({spec.proprio_dim},) (eef xyz, axis-angle, 2 fingers): name another "
                          "feature with --state-key, or --state-key '' to store none")


def _image_column(col: pa.ChunkedArray, root: Path, name: str) -> np.ndarray:
    """PNG/JPEG frames stored in the parquet (struct of bytes and path, as HF datasets' Image)."""
    from PIL import Image

    frames = []
    for i, v in enumerate(col.to_pylist()):
        data = v.get("bytes") if isinstance(v, dict) else v
        if data is None and isinstance(v, dict) and v.get("path"):
            p = Path(v["path"]) if Path(v["path"]).is_absolute() else root / v["path"]
            data = p.read_bytes() if p.is_file() else None
        if data is None:
            raise ReplayError(f"{name}: frame {i} has neither bytes nor a readable path")
        try:
            frames.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        except OSError as exc:
            raise ReplayError(f"{name}: frame {i} is not a readable image ({exc})") from None
    return np.stack(frames)


class _Reader:
    """Reads episodes in order, keeping the last data file open (v3.0 holds many episodes in one)."""

    def __init__(self, ds: Dataset):
        self.ds, self._file, self._table = ds, None, None

    def _rows(self, ep: Episode) -> pa.Table:
        if self._file != ep.data_file:
            self._file, self._table = ep.data_file, _read_parquet(ep.data_file)
        t = self._table
        if "episode_index" in t.column_names:
            t = t.filter(pc.equal(t.column("episode_index"), ep.index))
        elif ep.rows is not None:
            t = t.slice(ep.rows[0], ep.rows[1] - ep.rows[0])
        if "frame_index" in t.column_names:
            t = t.sort_by("frame_index")
        if len(t) != ep.length:
            raise ReplayError(f"{ep.data_file}: episode {ep.index} has {len(t)} rows, its metadata says {ep.length}")
        return t

    def _camera(self, ep: Episode, t: pa.Table, key: str) -> np.ndarray:
        from mbpo_ray.replay.video import decode_mp4, frames_at

        name = f"{ep.data_file}:{key}"
        if self.ds.features[key]["dtype"] == "image":
            if key not in t.column_names:
                raise ReplayError(f"{ep.data_file}: no column {key!r} for the camera feature")
            return _image_column(t.column(key), self.ds.root, name)
        path, start = ep.videos[key]
        if not path.is_file():
            raise ReplayError(f"{path}: missing video of camera {key!r}, episode {ep.index}")
        ts = (np.asarray(t.column("timestamp").to_pylist(), dtype=np.float64) if "timestamp" in t.column_names
              else np.arange(len(t)) / self.ds.fps) + start
        return frames_at(path, decode_mp4(path, float(ts.min()), float(ts.max())), ts, self.ds.fps)

    def arrays(self, ep: Episode, size: int) -> dict:
        """head, wrist (T, size, size, 3) uint8; proprio; actions; success; instruction of one episode."""
        from mbpo_ray.replay.video import resize_frames

        t = self._rows(ep)
        keys = self.ds.keys
        head = resize_frames(self._camera(ep, t, keys.head), size)
        wrist = resize_frames(self._camera(ep, t, keys.wrist), size)
        act = np.asarray(t.column(keys.action).to_pylist(), dtype=np.float32)
        act = act.reshape(len(t), *self.ds.features[keys.action]["shape"])
        state = (np.asarray(t.column(keys.state).to_pylist(), dtype=np.float32) if keys.state
                 else np.zeros((len(t), 8), np.float32))
        out = dict(head=head, wrist=wrist, proprio=state, actions=act, columns={})
        for c in ("next.success", "next.reward", "next.done", "action_valid_steps", "task_index"):
            if c in t.column_names:
                out["columns"][c] = np.asarray(t.column(c).to_pylist())
        task_index = out["columns"].get("task_index")
        out["instruction"] = (self.ds.tasks.get(int(task_index[0])) if task_index is not None else None) \
            or (ep.tasks[0] if ep.tasks else None)
        if out["instruction"] is None:
            raise ReplayError(f"{ep.data_file}: episode {ep.index} names no task (no task_index, no tasks)")
        return out


def episode_success(cols: dict, assume: bool) -> bool:
    """From ``next.success``, else ``next.reward`` (at the end), else ``assume`` (a demonstration set)."""
    if "next.success" in cols:
        return bool(cols["next.success"][-1])
    if "next.reward" in cols:
        return bool(cols["next.reward"][-1] > 0)
    return assume


def task_of(instruction: str, suite: str | None) -> tuple[str, int] | None:
    """The LIBERO (suite, task) of an instruction, within ``suite`` when given."""
    from mbpo_ray.replay.libero_hdf5 import SUITES, task_from_instruction

    return task_from_instruction(instruction, (suite,) if suite else SUITES)


def iter_lerobot_episodes(ds: Dataset, spec: StoreSpec, suite: str | None = None, assume_success: bool = True,
                          rotate180: bool = False) -> Iterator[pa.RecordBatch]:
    """One record batch per episode, in episode order. Instructions are matched to LIBERO tasks
    (suite ``suite`` or any); one LIBERO does not know is stored as suite ``lerobot``, task = task_index."""
    from mbpo_ray.envs.libero_env import Observation
    from mbpo_ray.replay.episode import steps_to_episode

    reader, tasks = _Reader(ds), {}
    for ep in ds.episodes:
        a = reader.arrays(ep, spec.image_size)
        text = a["instruction"]
        if text not in tasks:
            found = task_of(text, suite)
            if found is None and suite:
                raise ReplayError(f"episode {ep.index}: {suite} has no task {text!r}; leave --suite out to keep "
                                  "tasks LIBERO does not know")
            tasks[text] = found or ("lerobot", len(tasks))
        head, wrist = (np.ascontiguousarray(x[:, ::-1, ::-1]) if rotate180 else x for x in (a["head"], a["wrist"]))
        s, task_id = tasks[text]
        meta = dict(suite=ep.extra.get("suite", s), task_id=int(ep.extra.get("task_id", task_id)), instruction=text,
                    source=ep.extra.get("source", "demo"), policy_version=int(ep.extra.get("policy_version", -1)),
                    episode_id=ep.extra.get("episode_id"))

        def obs(t: int, head=head, wrist=wrist, a=a) -> Observation:
            return Observation(head=head[t], wrist=wrist[t], proprio=a["proprio"][t])

        if ds.chunk_rows:
            yield _chunk_rows(spec, obs, a, meta)
        else:
            yield steps_to_episode(spec, obs, a["actions"], episode_success(a["columns"], assume_success), **meta)


def _chunk_rows(spec: StoreSpec, obs, a: dict, meta: dict) -> pa.RecordBatch:
    """A dataset with one row per chunk (this project's export): rows back as they were; the row with
    no valid action is the terminal observation."""
    from mbpo_ray.replay.episode import EpisodeBuilder

    cols, n = a["columns"], len(a["actions"])
    valid = cols.get("action_valid_steps", np.full(n, spec.chunk_size))
    reward = cols.get("next.reward", np.zeros(n))
    success = cols.get("next.success", np.zeros(n, bool))
    done = cols.get("next.done", np.arange(n) == n - 2)
    b = EpisodeBuilder(spec, **meta)
    for i in range(n - 1):
        b.add_chunk(obs(i), a["actions"][i][: int(valid[i])], float(reward[i]), bool(success[i]), bool(done[i]))
    return b.finish(obs(n - 1))
