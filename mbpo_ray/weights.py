"""Versioned weight store: learners publish, every worker pulls the version a request names (or the newest).

Layout on any pyarrow filesystem (a local folder, a shared mount, ``s3://...``)::

    ROOT/NAME/v00000012.safetensors   the weights of version 12 (written atomically)
    ROOT/NAME/latest.json             {"version": 12, ...}: written after the file it names

A replica that joins late (autoscaling, a restart after a failure) reads ``latest.json`` and comes up
on the newest weights whatever the pool size; nothing has to be pushed to it.
"""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from mbpo_ray.replay.store import _atomic_write, _resolve


class WeightStore:
    def __init__(self, uri: str, keep: int = 3):
        self.uri = uri
        self.fs, self.root = _resolve(uri, None)
        self.keep = keep

    def _dir(self, name: str) -> str:
        return f"{self.root}/{name}"

    def publish(self, name: str, state_dict: dict, version: int, meta: dict | None = None) -> str:
        """Store ``state_dict`` as ``version`` of ``name`` (which must be newer than the latest)."""
        from safetensors.torch import save

        return self.publish_bytes(name, save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}),
                                  version, meta)

    def read_bytes(self, name: str, version: int) -> bytes:
        """The stored safetensors file of ``version`` (to keep it in a checkpoint)."""
        with self.fs.open_input_stream(f"{self._dir(name)}/v{version:08d}.safetensors") as f:
            return f.read()

    def publish_bytes(self, name: str, payload: bytes, version: int, meta: dict | None = None) -> str:
        """Store a safetensors file's bytes as ``version`` of ``name`` (newer than the latest)."""
        if version <= self.latest(name):
            raise ValueError(f"{name} version {version} is not newer than the stored {self.latest(name)}")
        self.fs.create_dir(self._dir(name), recursive=True)
        path = f"{self._dir(name)}/v{version:08d}.safetensors"
        _atomic_write(self.fs, path, payload)
        _atomic_write(self.fs, f"{self._dir(name)}/latest.json",
                      json.dumps({"version": version, **(meta or {})}).encode())
        self._prune(name, version)
        return path

    def latest(self, name: str) -> int:
        """The newest published version of ``name``; 0 when there is none."""
        try:
            with self.fs.open_input_stream(f"{self._dir(name)}/latest.json") as f:
                return int(json.loads(f.read())["version"])
        except (FileNotFoundError, OSError):
            return 0

    def load(self, name: str, version: int | None = None) -> tuple[dict, int]:
        """(state_dict, version): the given version, or the newest."""
        from safetensors.torch import load

        version = self.latest(name) if version is None else version
        if version <= 0:
            raise FileNotFoundError(f"no weights named {name!r} in {self.uri}")
        return load(self.read_bytes(name, version)), version

    def _prune(self, name: str, newest: int) -> None:
        """Drop versions older than the ``keep`` newest (readers load within moments of publishing)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._dir(name)))
        for info in infos:
            base = info.base_name
            if base.startswith("v") and base.endswith(".safetensors") and int(base[1:9]) <= newest - self.keep:
                self.fs.delete_file(info.path)
