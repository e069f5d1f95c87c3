"""benchmarks/wm_scale.py: a world model's data exported as token ids, world models of a size trained
from them and judged on held-out loss and on the sibling pairs, and the clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.wm_scale import pack, unpack
from tests.rl.test_common_heldout import _store
from tests.rl.test_sibling_fidelity import _branch_store

ROOT = Path(__file__).resolve().parents[2]


def _wm_scale(*argv, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/wm_scale.py", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "MBPO_RESULTS_DIR": str(results)}, timeout=600)


def test_packed_sequences_come_back_as_they_went_in():
    prompts, targets = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9]]
    packed = pack(prompts, targets)
    assert packed["offsets"].tolist() == [0, 5, 9] and unpack({f"x_{k}": v for k, v in packed.items()}, "x") == (
        prompts, targets)


def test_export_then_train_and_judge_a_size(tmp_path, tiny_world_model):
    wm = tmp_path / "wm"
    shutil.copytree(tiny_world_model, wm)
    (wm / "split.json").write_text(json.dumps({"train": ["e0", "e1", "e2"], "heldout": ["e3"]}))
    _store(tmp_path / "store")
    _branch_store(tmp_path / "siblings")
    data = tmp_path / "data.npz"
    out = _wm_scale("export", "--world-model", wm, "--store", tmp_path / "store", "--siblings", tmp_path / "siblings",
                    "--branches-seed", 0, "--out", data, "--boot", 50, results=tmp_path / "r")
    assert out.returncode == 0, out.stderr
    assert "train 9, heldout 3, pairs 18" in out.stdout  # 3 transitions per episode; two groups of 3 branches
    again = _wm_scale("export", "--world-model", wm, "--store", tmp_path / "store", "--siblings", tmp_path / "siblings",
                      "--branches-seed", 0, "--out", data, results=tmp_path / "r")
    assert again.returncode != 0 and "exists: name a new file" in again.stderr  # nothing overwritten
    out = _wm_scale("run", "--data", data, "--sizes", "tiny", "--steps", 4, "--eval-every", 2, "--boot", 50,
                    results=tmp_path / "r")
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r" / "wm_scale.json").read_text())
    tiny = res["sizes"]["tiny"]
    assert tiny["steps"] == 4 and set(tiny["heldout_loss_by_step"]) == {"2", "4"} and tiny["stopped_by"] == "steps"
    assert all(np.isfinite(tiny[s][p]) and tiny[s][p] > 0 for s in ("heldout", "train") for p in ("head", "wrist"))
    assert 0 <= tiny["action"]["views"]["pick_accuracy"] <= 1 and np.isfinite(tiny["action"]["head"]["gain_nats"])
    assert res["reference"]["params"] > 0 and "gain_nats" in res["reference"]["action"]["wrist"]
    assert (tmp_path / "r" / "wm_scale.png").is_file() and res["data"]["transitions"]["pairs"] == 18


def test_a_file_that_is_not_an_export_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    out = _wm_scale("run", "--data", bad, results=tmp_path / "r")
    assert out.returncode != 0 and "not a file written by `wm_scale.py export`" in out.stderr
    assert not (tmp_path / "r").exists()
