"""LeRobot datasets in and out: v2.1 (PNG in parquet, and MP4 per episode) and v3.0 (many episodes per
file) imported through `mbpo-ray import-lerobot`; a store exported with `export-lerobot` and imported
back gives the same episodes (PNG exactly, MP4 within codec error); bad input is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mbpo_ray.cli import main
from mbpo_ray.envs.libero_env import task_info
from mbpo_ray.replay import ReplayStore
from mbpo_ray.world_model.tokenizer import psnr
from tests.replay.lerobot_data import episode, write_v21, write_v30

S = 32
LENGTHS = (23, 17, 31)


def _tasks() -> list[str]:
    return [task_info("libero_spatial", 0)[1], "stack the towels neatly"]  # a LIBERO task and an unknown one


def _episodes() -> list[dict]:
    return [episode(n, S, k) | {"task": k % 2} for k, n in enumerate(LENGTHS)]


def _import(tmp_path, ds, *flags) -> ReplayStore:
    out = tmp_path / "store"
    assert main(["import-lerobot", str(ds), "--out", str(out), "--image-size", str(S), "--chunk-size", "5",
                 *flags]) == 0
    return ReplayStore.open(str(out))


def _check_episodes(store: ReplayStore, eps: list[dict], exact: bool) -> None:
    assert len(store.episodes) == len(eps)
    for meta, ep in zip(store.episodes, eps, strict=True):
        t = store.read_episode(meta.episode_id)
        n = len(ep["actions"])
        steps = np.asarray(t.column("step").to_pylist())
        assert meta.env_steps == n - 1 and t.column("is_last").to_pylist()[-1]
        assert meta.success  # demonstrations with no success column: assumed successful
        head = np.asarray(t.column("head").to_pylist(), np.uint8).reshape(len(t), S, S, 3)
        if exact:
            np.testing.assert_array_equal(head, ep["head"][steps])
        else:
            assert psnr(head, ep["head"][steps]).min() >= 35
        acts = np.asarray(t.column("actions").to_pylist()).reshape(len(t), 5, 7)
        k = int(t.column("num_actions").to_pylist()[0])
        np.testing.assert_allclose(acts[0, :k], ep["actions"][:k])
        np.testing.assert_allclose(np.asarray(t.column("proprio").to_pylist()), ep["state"][steps], rtol=1e-6)
    suites = [(m.suite, m.task_id) for m in store.episodes]
    assert suites[0] == ("libero_spatial", 0) and suites[1][0] == "lerobot"


def test_v21_png_in_parquet_with_openpi_keys(tmp_path):
    eps = _episodes()
    ds = write_v21(tmp_path / "ds", eps, _tasks(), video=False, size=S)
    _check_episodes(_import(tmp_path, ds), eps, exact=True)


def test_v21_one_mp4_per_camera_per_episode(tmp_path):
    eps = _episodes()
    ds = write_v21(tmp_path / "ds", eps, _tasks(), video=True, size=S,
                   cams={"head": "observation.images.agent", "wrist": "observation.images.hand"})
    _check_episodes(_import(tmp_path, ds, "--head-key", "observation.images.agent", "--wrist-key",
                            "observation.images.hand"), eps, exact=False)


def test_v30_many_episodes_per_file(tmp_path):
    eps = _episodes()
    ds = write_v30(tmp_path / "ds", eps, _tasks(), size=S, per_file=2)  # episode 2 starts a second file
    store = _import(tmp_path, ds)
    _check_episodes(store, eps, exact=False)


@pytest.mark.parametrize("images", ["png", "mp4"])
def test_export_then_import_gives_the_same_episodes(tmp_path, images):
    eps = _episodes()
    src = _import(tmp_path, write_v21(tmp_path / "ds", eps, _tasks(), video=False, size=S))
    out = tmp_path / "export"
    assert main(["export-lerobot", str(tmp_path / "store"), "--out", str(out), "--images", images,
                 "--episodes-per-file", "2"]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3
    assert len(pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")) == 3
    back_dir = tmp_path / "back"
    assert main(["import-lerobot", str(out), "--out", str(back_dir), "--image-size", str(S), "--chunk-size", "5"]) == 0
    back = ReplayStore.open(str(back_dir))
    for a, b in zip(src.episodes, back.episodes, strict=True):
        assert (a.episode_id, a.source, a.suite, a.task_id, a.success, a.chunks) == \
            (b.episode_id, b.source, b.suite, b.task_id, b.success, b.chunks)
        ta, tb = src.read_episode(a.episode_id), back.read_episode(b.episode_id)
        for col in ("actions", "num_actions", "proprio", "reward", "success", "done", "is_last", "instruction"):
            assert ta.column(col).to_pylist() == tb.column(col).to_pylist(), col
        for view in ("head", "wrist"):
            x, y = (np.asarray(t.column(view).to_pylist(), np.uint8).reshape(len(t), S, S, 3) for t in (ta, tb))
            if images == "png":
                np.testing.assert_array_equal(x, y)
            else:
                assert psnr(x, y).min() >= 35, view


def test_bad_input_is_one_clear_error_and_leaves_no_store(tmp_path, capsys):
    eps = _episodes()
    ds = write_v21(tmp_path / "ds", eps, _tasks(), video=True, size=S)
    out = tmp_path / "store"

    def run(*flags):
        code = main(["import-lerobot", str(ds), "--out", str(out), "--image-size", str(S), *flags])
        return code, capsys.readouterr().err

    code, err = run("--head-key", "observation.images.nope")
    assert code == 2 and "--head-key='observation.images.nope'" in err and "no such feature" in err
    code, err = run("--action-key", "state")
    assert code == 2 and "has shape (8,)" in err and "--action-key" in err
    (ds / "videos" / "chunk-000" / "image" / "episode_000001.mp4").write_bytes(b"not a video")
    code, err = run()
    assert code == 2 and "episode_000001.mp4: not a readable video" in err
    assert not out.exists() and not any(p.name.startswith(".store") for p in tmp_path.iterdir())
    episodes = ds / "meta" / "episodes.jsonl"
    good = episodes.read_text()
    episodes.write_text(good.replace('"length"', '"len"'))
    code, err = run()
    assert code == 2 and "the episode metadata has no 'length'" in err
    episodes.write_text(good)
    (ds / "meta" / "info.json").write_text("{")
    code, err = run()
    assert code == 2 and "info.json: not valid JSON" in err
