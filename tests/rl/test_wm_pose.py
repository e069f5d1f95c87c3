"""benchmarks/wm_pose.py: the layout that generates the robot's next pose before the frames, and the
plain-vs-pose comparison end to end on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.wm_pose import PoseLayout
from mbpo_ray.world_model.layout import TokenLayout
from mbpo_ray.world_model.train import IGNORE, collate
from tests.rl.test_common_heldout import _store
from tests.rl.test_sibling_fidelity import _branch_store

ROOT = Path(__file__).resolve().parents[2]


def _layouts() -> tuple[TokenLayout, PoseLayout]:
    rng = np.random.default_rng(0)
    plain = TokenLayout.fit(["put the bowl on the plate"], rng.uniform(-1, 1, (50, 7)), 16, 4, 3)
    lo, hi = tuple([-0.5] * 8), tuple([0.5] * 8)
    return plain, PoseLayout(**{k: getattr(plain, k) for k in plain.__dataclass_fields__}, pose_low=lo, pose_high=hi)


def test_the_pose_goes_in_before_the_actions_and_comes_out_before_the_head_view():
    plain, pl = _layouts()
    rng = np.random.default_rng(1)
    h, w, nh, nw = (rng.integers(0, 16, 4) for _ in range(4))
    acts, pose, nxt = rng.uniform(-1, 1, (3, 7)), rng.uniform(-0.4, 0.4, 8), rng.uniform(-0.4, 0.4, 8)
    p, t = plain.prompt("put the bowl on the plate", h, w, acts), plain.target(nh, nw, True, h, w)
    pp, pt = pl.with_pose(p, pose), pl.target_with_pose(t, pl.pose_ids(nxt))
    act = pp.index(pl.sp.act)
    assert pp[act - 8:act] == pl.pose_ids(pose) and pp[act + 1:] == p[-1 - pl.action_tokens:-1]
    assert pt[8] == pl.sp.head and np.allclose(pl.pose_of(pt[:8]), nxt, atol=1 / 256 + 1e-9)
    seg = pl.segments()  # the segments still name the head and wrist codes and the answer
    assert pt[seg["head"]] == t[plain.segments()["head"]] and pt[seg["reward"]] == [pl.sp.yes]
    ids, labels, segment = collate([pp], [pt], pl)
    start = len(pp)
    assert labels[0, :start].eq(IGNORE).all() and segment[0, start:start + 9].eq(-1).all()  # the pose: no view
    assert segment[0, start + 9:start + 13].eq(0).all() and len(pp) + len(pt) <= pl.max_len()


def test_plain_and_pose_models_trained_and_judged_on_tiny_data(tmp_path, tiny_world_model):
    wm = tmp_path / "wm"
    shutil.copytree(tiny_world_model, wm)
    (wm / "split.json").write_text(json.dumps({"train": ["e0", "e1", "e2"], "heldout": ["e3"]}))
    _store(tmp_path / "store")
    _branch_store(tmp_path / "siblings")
    out = subprocess.run([sys.executable, "benchmarks/wm_pose.py", "--world-model", wm, "--store", tmp_path / "store",
                          "--siblings", tmp_path / "siblings", "--branches-seed", "0", "--size", "tiny", "--steps", "4",
                          "--eval-every", "2", "--boot", "50"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MBPO_RESULTS_DIR": str(tmp_path / "r")})
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r" / "wm_pose.json").read_text())
    plain, pose = res["models"]["plain"], res["models"]["pose"]
    assert plain["steps"] == pose["steps"] == 4 and res["pairs"] == 18 and res["transitions"]["train"] == 9
    assert 0 <= plain["action"]["views"]["pick_accuracy"] <= 1
    for how in ("greedy", "real"):
        assert np.isfinite(pose[f"action_{how}"]["wrist"]["gain_nats"])
    assert pose["pose"]["generated_vs_own_cm"] >= 0 and "pose_real_minus_plain" in res["views_gain_vs_plain"]
    assert (tmp_path / "r" / "wm_pose.png").is_file()
