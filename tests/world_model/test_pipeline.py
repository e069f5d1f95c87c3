"""train-tokenizer -> train-world-model (resumable) -> eval-world-model, on a tiny store made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbpo_ray.cli import main
from mbpo_ray.replay import ReplayStore, StoreSpec
from tests.conftest import random_episode

pytest.importorskip("diffusers")
SMALL = StoreSpec(image_size=32, chunk_size=4)
TOK = ["--tokenizer.steps=15", "--tokenizer.batch_size=8"]
WM = ["--world_model.hidden_size=32", "--world_model.num_layers=1", "--world_model.num_heads=2",
      "--world_model.intermediate_size=64", "--world_model.batch_size=4", "--world_model.checkpoint_every=5",
      "--world_model.holdout_episodes=0.34"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wm") / "store")
    s = ReplayStore.create(path, SMALL)
    rng = np.random.default_rng(0)
    for k in range(6):
        s.append(random_episode(rng, spec=SMALL, chunks=3, task_id=k % 2)[0])
    return path


def test_pipeline(store, tmp_path, capsys):
    tok, ckpt, report = tmp_path / "tok", tmp_path / "wm", tmp_path / "report"
    assert main(["train-tokenizer", store, "--out", str(tok), *TOK]) == 0
    assert "held-out reconstruction PSNR" in capsys.readouterr().out
    assert main(["train-tokenizer", store, "--out", str(tok), *TOK]) == 2  # never overwrites
    assert "exists and is not empty" in capsys.readouterr().err

    assert main(["train-world-model", store, "--tokenizer", str(tok), "--out", str(ckpt), *WM,
                 "--world_model.steps=5"]) == 0
    assert json.loads((ckpt / "state" / "step.json").read_text())["step"] == 5
    assert main(["train-world-model", store, "--tokenizer", str(tok), "--out", str(ckpt), *WM,
                 "--world_model.steps=10", "--resume"]) == 0
    assert json.loads((ckpt / "state" / "step.json").read_text())["step"] == 10
    split = json.loads((ckpt / "split.json").read_text())
    assert len(split["heldout"]) == 2 and len(split["train"]) == 4
    assert (ckpt / "model" / "model.safetensors").is_file() and any((ckpt / "tb").iterdir())
    assert json.loads((ckpt / "best.json").read_text())["step"] in (5, 10)

    assert main(["eval-world-model", str(ckpt), store, "--out", str(report), "--engine", "hf"]) == 0
    q = json.loads((report / "world_model_quality.json").read_text())
    for view in ("head", "wrist"):
        assert set(q[view]) == {"psnr", "psnr_copy_baseline", "ssim", "ssim_copy_baseline"}
        assert 0 < q[view]["psnr"] < 100 and -1 <= q[view]["ssim"] <= 1
    assert q["reward"]["transitions"] == 6 and 0 <= q["reward"]["accuracy"] <= 1
    assert (report / "branch_grid.png").is_file()


def test_missing_checkpoint(store, tmp_path, capsys):
    assert main(["eval-world-model", str(tmp_path / "nope"), store, "--out", str(tmp_path / "r")]) == 2
    assert "is not a world-model checkpoint" in capsys.readouterr().err
