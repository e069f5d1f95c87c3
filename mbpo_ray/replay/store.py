"""Append-only Arrow replay store on any pyarrow filesystem (local disk, NFS, S3, GCS, ...).

Layout of a store at ``ROOT``::

    ROOT/store.json                 StoreSpec: image size, chunk size, ... (written once)
    ROOT/data/part-<ns>-<rand>.arrow    Arrow IPC files, immutable once renamed into place
    ROOT/manifest/part-<ns>-<rand>.json one entry per committed data file (rows, episodes, tasks)

Commit protocol of :meth:`ReplayStore.append`: write ``data/.part-X.arrow.tmp``, flush, rename to
``data/part-X.arrow``; then write the manifest entry the same way. A data file is part of the
store only once its manifest entry exists, so a writer killed at any point leaves the store
readable and loses only the batch in flight. Names are unique, so several writers (Ray env
runners on different nodes) append to one store without locks.

Reads are memory-mapped on local disk (random-access reads elsewhere): the in-memory index holds a
few numbers per *episode* (from the manifests), and sampling start states touches only the record
batches that hold the sampled rows.
"""

from __future__ import annotations

import json
import os
import time
import typing
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from mbpo_ray.replay.schema import ReplayError, StoreSpec

BATCH_ROWS = 4  # rows per Arrow record batch in a data file: the unit a sampled row costs to read
MAX_OPEN_FILES = 64


@dataclass(frozen=True)
class EpisodeMeta:
    episode_id: str
    part: int  # index into the store's parts
    first_row: int  # row of chunk 0 in that part's file
    rows: int  # rows incl. the terminal row
    chunks: int  # non-terminal rows = start states
    suite: str
    task_id: int
    success: bool
    env_steps: int
    source: str
    grasp_chunk: int = -1  # first chunk whose actions close the gripper (-1: none); see _grasp_chunk


def _resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, uri.rstrip("/")
    if "://" not in uri:
        uri = os.path.abspath(os.path.expanduser(uri))
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError) as exc:
        raise ReplayError(f"cannot open replay store URI {uri!r}: {exc}") from None
    return fs, path.rstrip("/")


class ReplayStore:
    """Open with :meth:`open` (must exist) or :meth:`create` (new or matching existing store)."""

    def __init__(self, fs: pafs.FileSystem, root: str, spec: StoreSpec):
        self.fs, self.root, self.spec = fs, root, spec
        self.schema = spec.schema()
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._parts: list[dict[str, Any]] = []
        self._part_names: set[str] = set()
        self._episodes: list[EpisodeMeta] = []
        self._readers: OrderedDict[int, pa.ipc.RecordBatchFileReader] = OrderedDict()
        self._start_index: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.refresh()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, uri: str, filesystem: pafs.FileSystem | None = None) -> ReplayStore:
        fs, root = _resolve(uri, filesystem)
        spec_path = f"{root}/store.json"
        if fs.get_file_info(spec_path).type != pafs.FileType.File:
            raise ReplayError(
                f"{uri!r} is not a replay store (no store.json); create one with `mbpo-ray collect --out {uri}`"
            )
        with fs.open_input_stream(spec_path) as f:
            spec = StoreSpec.from_json(f.read().decode(), spec_path)
        return cls(fs, root, spec)

    @classmethod
    def create(cls, uri: str, spec: StoreSpec, filesystem: pafs.FileSystem | None = None) -> ReplayStore:
        """Create a store, or open an existing one whose spec equals ``spec``."""
        fs, root = _resolve(uri, filesystem)
        if fs.get_file_info(f"{root}/store.json").type == pafs.FileType.File:
            store = cls.open(uri, filesystem)
            if store.spec != spec:
                raise ReplayError(
                    f"store {uri!r} exists with {store.spec}; this run writes {spec}. "
                    "Use another --out, or settings that match the store"
                )
            return store
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise ReplayError(f"{uri!r} is a file, not a replay store directory")
        for sub in ("", "/data", "/manifest"):
            fs.create_dir(root + sub, recursive=True)
        _atomic_write(fs, f"{root}/store.json", spec.to_json().encode())
        return cls(fs, root, spec)

    # ------------------------------------------------------------------ writing
    def append(self, data: pa.RecordBatch | pa.Table | list[pa.RecordBatch]) -> str:
        """Commit rows atomically as one new data file. Returns the part name."""
        table = self._as_table(data)
        episodes = _episode_runs(table, self.spec.action_dim)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        data_path = f"{self.root}/data/{name}.arrow"
        options = pa.ipc.IpcWriteOptions(
            compression=None if self.spec.compression == "none" else self.spec.compression
        )
        batches = table.combine_chunks().to_batches(max_chunksize=BATCH_ROWS)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, self.schema, options=options) as writer:
            for batch in batches:
                writer.write_batch(batch)
        payload = sink.getvalue()
        _atomic_write(self.fs, data_path, payload)
        entry = {
            "file": f"data/{name}.arrow",
            "rows": table.num_rows,
            "bytes": payload.size,
            "batches": [b.num_rows for b in batches],
            "episodes": episodes,
            "created": time.time(),
        }
        _atomic_write(self.fs, f"{self.root}/manifest/{name}.json", json.dumps(entry).encode())
        self._add_parts({name: entry})
        return name

    def _as_table(self, data) -> pa.Table:
        if isinstance(data, pa.RecordBatch):
            data = [data]
        table = pa.Table.from_batches(data) if isinstance(data, list) else data
        if table.num_rows == 0:
            raise ReplayError("nothing to append: the batch has no rows")
        if not table.schema.equals(self.schema, check_metadata=False):
            for field in self.schema:
                got = table.schema.field(field.name) if field.name in table.schema.names else None
                if got is None or got.type != field.type:
                    raise ReplayError(
                        f"column {field.name!r}: expected {field.type}, got "
                        f"{'nothing' if got is None else got.type} (store spec {self.spec})"
                    )
            table = table.select(self.schema.names)
        return table.replace_schema_metadata(self.schema.metadata)

    # ------------------------------------------------------------------ index
    def refresh(self) -> ReplayStore:
        """Pick up parts committed since the last refresh (by this or another writer)."""
        selector = pafs.FileSelector(f"{self.root}/manifest", allow_not_found=True)
        names = sorted(
            os.path.basename(i.path)[: -len(".json")]
            for i in self.fs.get_file_info(selector)
            if i.path.endswith(".json") and not os.path.basename(i.path).startswith(".")
        )
        new = {}
        for name in names:
            if name not in self._part_names:
                path = f"{self.root}/manifest/{name}.json"
                try:
                    with self.fs.open_input_stream(path) as f:
                        new[name] = json.loads(f.read())
                except (ValueError, OSError) as exc:
                    raise ReplayError(f"manifest entry {path} is corrupt ({exc})") from None
        self._add_parts(new)
        return self

    def _add_parts(self, new: dict[str, dict[str, Any]]) -> None:
        """Index new parts so that parts (and episodes) stand in name order, however they were found:
        a part another writer committed late may sort before known ones, and then every process that
        sees the same files indexes (and samples) them the same way."""
        if not new:
            return
        if self._parts and min(new) < self._parts[-1]["name"]:  # rebuild the whole index in name order
            known = {p["name"]: p for p in self._parts}
            self._parts, self._part_names, self._episodes = [], set(), []
            self._readers.clear()
            new = {**known, **new}
        for name in sorted(new):
            self._add_part(name, new[name])
        self._start_index = None

    def _add_part(self, name: str, entry: dict[str, Any]) -> None:
        part = len(self._parts)
        entry = dict(entry, name=name, offsets=np.cumsum([0] + entry["batches"]).tolist())
        self._parts.append(entry)
        self._part_names.add(name)
        if any("grasp_chunk" not in ep for ep in entry["episodes"]):  # a part written before the field
            runs = _episode_runs(self.read_part(part, list(RUN_COLUMNS)), self.spec.action_dim)
            entry["episodes"] = [dict(ep, grasp_chunk=r["grasp_chunk"]) for ep, r in zip(entry["episodes"], runs,
                                                                                        strict=True)]
        for ep in entry["episodes"]:
            self._episodes.append(EpisodeMeta(part=part, **ep))

    @property
    def episodes(self) -> list[EpisodeMeta]:
        return list(self._episodes)

    @property
    def part_names(self) -> tuple[str, ...]:
        """The committed parts this view holds, in index order: a snapshot another process can name."""
        return tuple(p["name"] for p in self._parts)

    def parts_of(self, episode_ids: typing.Iterable[str]) -> list[str]:
        """The names of the parts that hold ``episode_ids`` (refreshed first), in that order, once each."""
        self.refresh()
        where = {e.episode_id: self._parts[e.part]["name"] for e in self._episodes}
        missing = [i for i in episode_ids if i not in where]
        if missing:
            raise ReplayError(f"store {self.root} holds no episode {missing[0]!r}")
        return list(dict.fromkeys(where[i] for i in episode_ids))

    def episodes_in(self, parts: typing.Collection[str]) -> np.ndarray:
        """Indices into :attr:`episodes` of the episodes stored in ``parts`` (a snapshot's names)."""
        wanted = set(parts)
        missing = wanted - self._part_names
        if missing:
            self.refresh()
            missing = wanted - self._part_names
        if missing:
            raise ReplayError(f"store {self.root}: parts {sorted(missing)[:3]} are not visible to this reader")
        keep = [self._parts[e.part]["name"] in wanted for e in self._episodes]
        return np.flatnonzero(np.array(keep, dtype=bool))

    def __len__(self) -> int:
        return sum(p["rows"] for p in self._parts)

    def info(self) -> dict[str, Any]:
        eps = self._episodes
        tasks: dict[str, int] = {}
        sources: dict[str, int] = {}
        for e in eps:
            key = f"{e.suite}/{e.task_id}"
            tasks[key] = tasks.get(key, 0) + 1
            sources[e.source] = sources.get(e.source, 0) + 1
        return {
            "uri": self.root,
            "episodes": len(eps),
            "transitions": int(sum(e.chunks for e in eps)),
            "env_steps": int(sum(e.env_steps for e in eps)),
            "rows": len(self),
            "tasks": dict(sorted(tasks.items())),
            "sources": dict(sorted(sources.items())),
            "success_rate": float(np.mean([e.success for e in eps])) if eps else 0.0,
            "bytes": int(sum(p["bytes"] for p in self._parts)),
            "files": len(self._parts),
            "image_size": self.spec.image_size,
            "chunk_size": self.spec.chunk_size,
        }

    # ------------------------------------------------------------------ reading
    def _reader(self, part: int) -> pa.ipc.RecordBatchFileReader:
        reader = self._readers.get(part)
        if reader is None:
            path = f"{self.root}/{self._parts[part]['file']}"
            try:
                source = pa.memory_map(path, "r") if self._local else self.fs.open_input_file(path)
                reader = pa.ipc.open_file(source)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ReplayError(f"data file {path} is missing or corrupt ({exc})") from None
            self._readers[part] = reader
            if len(self._readers) > MAX_OPEN_FILES:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(part)
        return reader

    def _take(self, part: int, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
        """Rows of one part, reading only the record batches that hold them."""
        offsets = np.asarray(self._parts[part]["offsets"])
        which = np.searchsorted(offsets, rows, side="right") - 1
        reader = self._reader(part)
        pieces = []
        for b in np.unique(which):
            batch = reader.get_batch(int(b))
            if columns is not None:
                batch = batch.select(columns)
            pieces.append(batch.take(pa.array(rows[which == b] - offsets[b])))
        return pa.Table.from_batches(pieces)

    def read_part(self, part: int, columns: list[str] | None = None) -> pa.Table:
        table = self._reader(part).read_all()
        return table.select(columns) if columns is not None else table

    def iter_batches(self, columns: list[str] | None = None):
        for part in range(len(self._parts)):
            reader = self._reader(part)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                yield batch.select(columns) if columns is not None else batch

    def episode(self, key: int | str) -> EpisodeMeta:
        """An episode by position (0-based, in commit order) or by id. A string is an id first (an id
        may be all digits); a digit string that names no id is a position."""
        if isinstance(key, str):
            for e in self._episodes:
                if e.episode_id == key:
                    return e
            if not key.lstrip("-").isdigit():
                raise ReplayError(f"no episode with id {key!r} in {self.root}")
        k = int(key)
        if not -len(self._episodes) <= k < len(self._episodes):
            raise ReplayError(f"episode {k} out of range: the store has {len(self._episodes)} episodes")
        return self._episodes[k]

    def read_episode(self, key: int | str, columns: list[str] | None = None) -> pa.Table:
        e = self.episode(key)
        return self._take(e.part, np.arange(e.first_row, e.first_row + e.rows), columns)

    def _starts(self):
        if self._start_index is None:
            eps = self._episodes
            self._start_index = (
                np.array([e.part for e in eps], dtype=np.int32),
                np.array([e.first_row for e in eps], dtype=np.int64),
                np.array([e.chunks for e in eps], dtype=np.int64),
                np.array([e.task_id for e in eps], dtype=np.int32),
            )
        return self._start_index

    def sample_start_states(
        self,
        n: int,
        rng: np.random.Generator | None = None,
        task_id: int | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """``n`` rows drawn uniformly (with replacement) from all chunk-boundary states.

        ``task_id`` restricts the draw to one task. Rows come back in draw order.
        """
        from mbpo_ray.replay.samplers import uniform

        try:
            ep, chunk = uniform(self._episodes, n, rng or np.random.default_rng(), task_id)
        except ReplayError as exc:
            raise ReplayError(str(exc).replace("the store", str(self.root))) from None
        return self.read_start_states(ep, chunk, columns)

    def read_start_states(self, episodes: np.ndarray, chunks: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Rows of chunk ``chunks[i]`` of episode ``self.episodes[episodes[i]]``, in that order."""
        parts, first, n_chunks, _ = self._starts()
        episodes, chunks = np.asarray(episodes, np.int64), np.asarray(chunks, np.int64)
        if len(episodes) and ((chunks < 0) | (chunks >= n_chunks[episodes])).any():
            raise ReplayError("a start state lies outside its episode's chunks")
        n = len(episodes)
        rows = first[episodes] + chunks
        ep = episodes
        order = np.lexsort((rows, parts[ep]))
        pieces = []
        for p in np.unique(parts[ep]):
            sel = order[parts[ep][order] == p]
            pieces.append(self._take(int(p), rows[sel], columns))
        table = pa.concat_tables(pieces)
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        return table.take(pa.array(inverse))


RUN_COLUMNS = ("episode_id", "suite", "task_id", "success", "is_last", "num_actions", "source", "actions")


def _grasp_chunk(actions: np.ndarray, num_actions: np.ndarray, action_dim: int) -> int:
    """The first chunk of an episode whose executed actions close the gripper (the last action
    dimension > 0: LIBERO's and robosuite's -1 open / +1 close), -1 when none does: where a
    pick-and-place episode's first grasp attempt begins (``mbpo.start_sampler=grasp``)."""
    for i, (chunk, k) in enumerate(zip(actions, num_actions, strict=True)):
        if k and (chunk.reshape(-1, action_dim)[: int(k), -1] > 0).any():
            return i
    return -1


def _episode_runs(table: pa.Table, action_dim: int) -> list[dict[str, Any]]:
    """Episode metadata of contiguous runs of episode_id; checks terminal rows come last."""
    cols = table.select([c for c in RUN_COLUMNS if c != "actions"]).to_pydict()
    n = table.num_rows
    actions = table.column("actions").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
    runs, start = [], 0
    for i in range(1, n + 1):
        if i == n or cols["episode_id"][i] != cols["episode_id"][start]:
            last = cols["is_last"][start:i]
            if any(last[:-1]):
                raise ReplayError(f"episode {cols['episode_id'][start]}: a terminal row must be its last row")
            runs.append(
                {
                    "episode_id": cols["episode_id"][start],
                    "first_row": start,
                    "rows": i - start,
                    "chunks": (i - start) - int(last[-1]),
                    "suite": cols["suite"][start],
                    "task_id": int(cols["task_id"][start]),
                    "success": bool(any(cols["success"][start:i])),
                    "env_steps": int(sum(cols["num_actions"][start:i])),
                    "source": cols["source"][start],
                    "grasp_chunk": _grasp_chunk(actions[start:i], cols["num_actions"][start:i], action_dim),
                }
            )
            start = i
    return runs


def _atomic_write(fs: pafs.FileSystem, path: str, payload) -> None:
    """Write to a hidden temporary name, flush, then rename into place."""
    directory, base = path.rsplit("/", 1)
    tmp = f"{directory}/.{base}.{uuid.uuid4().hex[:6]}.tmp"
    if isinstance(fs, pafs.LocalFileSystem):
        with open(tmp, "wb") as f:
            f.write(memoryview(payload))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    with fs.open_output_stream(tmp) as f:
        f.write(payload)
    fs.move(tmp, path)
