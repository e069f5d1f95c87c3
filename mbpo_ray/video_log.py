"""Videos a person would rather watch than read: evaluation episodes and imagined branches next to
what really happened, as MP4 files, TensorBoard videos and (``logging.wandb``) Weights & Biases media.

TensorBoard shows a video as an animated image: :func:`tb_video` writes the summary
``SummaryWriter.add_video`` writes (a GIF in an image summary) without the moviepy it needs.
See them with ``tensorboard --logdir OUT/tb`` (the Images tab).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mbpo_ray.replay.video import resize_frames

FPS = 2  # one frame per chunk end, 0.5 s each


def side_by_side(head: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) head and wrist -> (T, S, 2S, 3)."""
    return np.concatenate([np.asarray(head), np.asarray(wrist)], axis=2)


def gif_bytes(frames: np.ndarray, ms_per_frame: int) -> bytes:
    """(T, H, W, 3) uint8 -> an animated GIF that loops."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return buf.getvalue()


def tb_video(tb, tag: str, frames: np.ndarray, step: int, fps: int = FPS) -> None:
    """(T, H, W, 3) uint8 as a TensorBoard video (an animated GIF image summary, as ``add_video``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    frames = np.asarray(frames, dtype=np.uint8)
    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=gif_bytes(frames, int(1000 / fps)))
    tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def branch_frames(branches, b: int, real_head: np.ndarray | None, real_wrist: np.ndarray | None) -> np.ndarray:
    """One frame per step of branch ``b``: imagined head | wrist on top, the real episode's frames at
    the same chunk boundaries below (black past its end; absent rows when ``real_*`` is None)."""
    n = int(branches.valid[b].sum())
    head = np.concatenate([branches.head[b, :n], branches.final_head[b][None]])
    wrist = np.concatenate([branches.wrist[b, :n], branches.final_wrist[b][None]])
    top = side_by_side(head, wrist)
    if real_head is None:
        return top
    bottom = np.zeros_like(top)
    size = head.shape[1]  # imagined frames are the tokenizer's size; the store's may differ
    real = side_by_side(resize_frames(real_head, size), resize_frames(real_wrist, size))[: len(top)]
    bottom[: len(real)] = real
    line = np.full((len(top), 2, top.shape[2], 3), 255, np.uint8)
    return np.concatenate([top, line, bottom], axis=1)


def real_continuation(store, start_id: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The recorded head and wrist frames from start state ``episode_id:chunk`` on, ``steps + 1`` of
    them (fewer where the episode ends)."""
    episode_id, chunk = start_id.rsplit(":", 1)
    t = store.read_episode(episode_id, columns=["head", "wrist"])
    t = t.slice(int(chunk), steps + 1)
    s = store.spec.image_size
    views = (np.asarray(t.column(v).combine_chunks().flatten(), np.uint8).reshape(len(t), s, s, 3)
             for v in ("head", "wrist"))
    return tuple(views)


class VideoLog:
    """MP4 files under ``folder`` + TensorBoard videos (+ W&B when given a run)."""

    def __init__(self, folder: Path, tb, wandb_run=None):
        self.folder, self.tb, self.wandb = Path(folder), tb, wandb_run

    def add(self, tag: str, frames: np.ndarray, step: int) -> Path:
        from mbpo_ray.replay.video import encode_mp4

        path = self.folder / f"{tag.replace('/', '_')}_step{step}.mp4"
        encode_mp4(path, frames, FPS)
        if self.tb is not None:
            tb_video(self.tb, tag, frames, step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Video(str(path), format="mp4")}, step=step)
        return path


def wandb_run(cfg, run: Path, run_id: str, resume: bool):
    """A W&B run in ``run/wandb`` (``logging.wandb_mode`` offline by default: nothing leaves the machine)."""
    import wandb

    return wandb.init(project=cfg.logging.wandb_project, dir=str(run), mode=cfg.logging.wandb_mode,
                      name=run_id, id=run_id.replace("/", "-"), resume="allow" if resume else None,
                      config=cfg.to_dict(), settings=wandb.Settings(silent=True))


def log_branches(videos: VideoLog, store, results: list, step: int, k: int) -> None:
    """The first ``k`` branches of an imagined batch (``ImagineResult`` shares), each above the real
    episode it branched from."""
    from mbpo_ray.rl.imagine import Branches

    if k <= 0 or not results:
        return
    br = Branches.concat([r.branches for r in results])
    store.refresh()
    for b in range(min(k, len(br))):
        real = (None, None)
        if br.start_ids:
            real = real_continuation(store, br.start_ids[b], int(br.valid[b].sum()))
        videos.add(f"imagine/branch{b}", branch_frames(br, b, *real), step)


def log_episodes(videos: VideoLog, results: list[dict], step: int) -> None:
    """Evaluation episodes recorded with frames (the ``frames`` entries are removed)."""
    for r in results:
        frames = r.pop("frames", None)
        if frames:
            head, wrist = (np.stack(x) for x in zip(*frames, strict=True))
            outcome = "success" if r["success"] else "failure"
            videos.add(f"eval/task{r['task_id']}_init{r['init_state']}_{outcome}", side_by_side(head, wrist), step)
