"""Demonstration collection through env-runner Ray actors on a real local cluster and real LIBERO, and
`mbpo-ray run` (make run): the whole pipeline from demonstrations to VLA-MBPO and evaluation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mbpo_ray.cli import main
from mbpo_ray.replay import ReplayStore, frames

pytestmark = pytest.mark.libero


def test_collect_in_parallel_actors_and_show_an_episode(ray_cluster, tmp_path, capsys):
    run_dir = tmp_path
    code = main(["collect", "--task", "0", "--episodes", "2", "--workers", "2", "--out", str(tmp_path / "replay"),
                 "--env.image_size=64"])
    assert code == 0, capsys.readouterr().err
    assert main(["replay", "show", str(tmp_path / "replay"), "--episode", "0", "--out", str(tmp_path / "episode0.png")]) == 0
    out = capsys.readouterr().out
    store = ReplayStore.open(str(run_dir / "replay"))
    info = store.info()
    assert info["episodes"] == 2 and info["success_rate"] == 1.0  # the expert solves init states 0 and 1
    assert "expert solved 2/2 episodes; stored 2" in out and f"{run_dir / 'episode0.png'}" in out
    for e in store.episodes:
        t = store.read_episode(e.episode_id)
        assert t.column("source").to_pylist() == ["demo"] * t.num_rows
        assert t.column("success").to_pylist()[-1] and 0 < e.env_steps <= 220
        assert frames(t, "head", 64).std() > 10
    png = Image.open(run_dir / "episode0.png")
    assert png.height > 2 * 64 and png.width >= 64 * min(16, store.episodes[0].chunks + 1)
    # the two episodes came from different init states: different first frames
    first = [frames(store.read_episode(k), "head", 64)[0] for k in range(2)]
    assert not np.array_equal(first[0], first[1])


def test_run_is_the_whole_pipeline(ray_cluster, tmp_path, capsys):
    code = main(["run", f"--cache_dir={tmp_path}", "--mbpo.tasks=0", "--run.episodes_per_task=1",
                 "--run.tokenizer_steps=3", "--run.world_model_steps=3", "--run.sft_steps=3", "--env.image_size=32",
                 "--mbpo.iterations=1", "--mbpo.branches=2", "--mbpo.eval_episodes=1", "--mbpo.real_every=1",
                 "--mbpo.real_episodes=1", "--world_model.holdout_episodes=0", "--logging.wandb=true"])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = next((tmp_path / "runs").iterdir())
    for part in ("episode0.png", "tokenizer", "world_model/model", "sft/model.safetensors", "mbpo/checkpoint/state.json"):
        assert (run_dir / part).exists(), part
    [log] = [json.loads(x) for x in (run_dir / "mbpo" / "metrics.jsonl").read_text().splitlines()]
    assert log["policy_version"] == 1 and "eval/success" in log and 0 < log["real/env_steps"] <= 220
    sources = [e.source for e in ReplayStore.open(str(run_dir / "replay")).episodes]
    assert sources.count("demo") == 1 and sources.count("real") == 1
    assert "== VLA-MBPO" in out and "all done" in out
    # videos: the evaluation episode and both imagined branches (above their real episodes), as MP4 files,
    # TensorBoard videos (`tensorboard --logdir OUT/tb`, Images tab) and W&B media (offline run)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mbpo_ray.replay.video import decode_mp4

    mp4s = sorted(p.name for p in (run_dir / "mbpo" / "videos").glob("*.mp4"))
    assert mp4s[1:] == ["imagine_branch0_step1.mp4", "imagine_branch1_step1.mp4"], mp4s
    assert mp4s[0].startswith("eval_task0_init0_"), mp4s
    frames, _ = decode_mp4(run_dir / "mbpo" / "videos" / mp4s[1])
    assert frames.shape[1:] == (64 + 2 + 64, 128, 3) and len(frames) >= 2  # imagined over real, head | wrist
    acc = EventAccumulator(str(run_dir / "mbpo" / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert {"imagine/branch0", "imagine/branch1"} <= set(acc.Tags()["images"])
    [video] = acc.Images("imagine/branch0")
    gif = Image.open(io.BytesIO(video.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == len(frames)
    [wandb_run] = (run_dir / "mbpo" / "wandb").glob("offline-run-*")
    assert next(wandb_run.glob("run-*.wandb")).stat().st_size > 0
    assert list((wandb_run / "files" / "media" / "videos").rglob("*.mp4"))
