"""MP4 files through PyAV: LeRobot's camera videos and the episode videos written next to GIFs.

``encode_mp4`` writes H.264 (``libx264``, yuv420p: what every player and LeRobot's decoders read) at
a near-lossless quality by default; ``decode_mp4`` returns every frame with its presentation time,
and ``frames_at`` picks the frames of given timestamps from a decoded file (LeRobot v3.0 keeps many
episodes in one file, each from its own ``from_timestamp``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from mbpo_ray.replay.schema import ReplayError


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames at ``size`` x ``size`` (bilinear; unchanged when already that size)."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


class Mp4Writer:
    """H.264 frames appended to one MP4, episode after episode (frame ``i`` of the file shown at
    ``i / fps``); even sizes are required by yuv420p, so odd frames are padded by one pixel."""

    def __init__(self, path: str | Path, fps: int, crf: int = 18, codec: str = "libx264"):
        import av

        self.path, self.fps, self.frames = Path(path), int(fps), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, self.fps)
        self._stream.options = {"crf": str(crf), "preset": "medium"}

    def add(self, frames: np.ndarray) -> None:
        import av

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(f"video frames must be (T>0, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
        if not self.frames:
            self._stream.width, self._stream.height = frames.shape[2], frames.shape[1]
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.frames
            self.frames += 1
            for packet in self._stream.encode(vf):
                self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        if self.frames:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None


def encode_mp4(path: str | Path, frames: np.ndarray, fps: int, crf: int = 18, codec: str = "libx264") -> None:
    """(T, H, W, 3) uint8 frames -> an MP4 at ``path``."""
    writer = Mp4Writer(path, fps, crf, codec)
    try:
        writer.add(frames)
    finally:
        writer.close()


def decode_mp4(path: str | Path, start_s: float = 0.0, end_s: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    """The frames of the first video stream shown from ``start_s`` to ``end_s`` (seconds, both
    included, half a frame of slack), (N, H, W, 3) uint8, and their times (N,). Seeks to the key
    frame before ``start_s``, so one episode of a many-episode file is decoded alone."""
    import av

    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ReplayError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 30)
            slack = 0.5 / rate
            if start_s > slack and stream.time_base:
                container.seek(int((start_s - slack) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.time if frame.time is not None else len(times) / rate)
                if t > end_s + slack:
                    break
                if t >= start_s - slack:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(t)
    except (av.error.FFmpegError, OSError) as exc:
        raise ReplayError(f"{path}: not a readable video ({exc}); re-encode it (e.g. to H.264 MP4)") from None
    if not frames:
        raise ReplayError(f"{path}: the video has no frames between {start_s:g} and {end_s:g} s")
    return np.stack(frames), np.asarray(times)


def frames_at(path: str | Path, decoded: tuple[np.ndarray, np.ndarray], timestamps: np.ndarray,
              fps: float) -> np.ndarray:
    """The decoded frames nearest to ``timestamps`` (seconds in the file); a timestamp with no frame
    within half a frame period is an error naming it."""
    frames, times = decoded
    timestamps = np.asarray(timestamps, dtype=np.float64)
    idx = np.clip(np.searchsorted(times, timestamps), 0, len(times) - 1)
    prev = np.clip(idx - 1, 0, len(times) - 1)
    idx = np.where(np.abs(times[prev] - timestamps) < np.abs(times[idx] - timestamps), prev, idx)
    off = np.abs(times[idx] - timestamps)
    bad = np.flatnonzero(off > 0.5 / fps + 1e-4)
    if len(bad):
        t = timestamps[bad[0]]
        raise ReplayError(f"{path}: no frame at t={t:.4f} s (nearest at {times[idx[bad[0]]]:.4f} s; the video "
                          f"holds {len(times)} frames over {times[-1]:.3f} s): the video and the parquet disagree")
    return frames[idx]
