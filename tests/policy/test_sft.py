"""SFT on a tiny store made here: loss falls, the few-shot demo choice, exact resume, CLI errors."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from safetensors.torch import load_file

from mbpo_ray.cli import main
from mbpo_ray.config import build_config
from mbpo_ray.policy import load_policy
from mbpo_ray.policy.sft import train_sft
from tests.policy.conftest import TINY_POLICY, learnable_episode

TINY_ARGS = [f"--policy.{k}={v}" for k, v in TINY_POLICY.items()]


def cfg(**sft):
    sft = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 0, **sft}
    return build_config(overrides={"policy": dict(TINY_POLICY), "sft": sft})


def test_sft_loss_falls_and_records_the_first_successful_demos(demo_store, tmp_path):
    out = tmp_path / "ck"
    r = train_sft(demo_store.root, str(out), cfg(steps=40, demos_per_task=2, checkpoint_every=20))
    assert r["steps"] == 40 and r["demos"] == {"0": 2, "1": 2}
    assert r["final_loss"] < 0.75 * math.log(256)  # starts at ln(256), the uniform distribution
    meta = json.loads((out / "policy.json").read_text())
    # per task: the failure first in the store is skipped, then the first two successes
    eps = demo_store.episodes
    for t in ("0", "1"):
        expected = [e.episode_id for e in eps if e.task_id == int(t) and e.success][:2]
        assert meta["demos"][t] == expected
    assert meta["step"] == 40 and meta["store_image_size"] == 16 and meta["bins"]["chunk_size"] == 4
    policy = load_policy(out)
    assert policy.cfg.image_size == 16 and (policy.proprio_std != 1).any()
    scalars = list((out / "tb").glob("events.out.tfevents.*"))
    assert scalars and scalars[0].stat().st_size > 0


def test_resume_continues_exactly_from_the_saved_step(demo_store, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_sft(demo_store.root, str(straight), cfg(steps=6, checkpoint_every=3))
    train_sft(demo_store.root, str(split), cfg(steps=3, checkpoint_every=3))
    assert json.loads((split / "state" / "step.json").read_text())["step"] == 3
    r = train_sft(demo_store.root, str(split), cfg(steps=6, checkpoint_every=3), resume=True)
    assert r["steps"] == 6 and json.loads((split / "policy.json").read_text())["step"] == 6
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # same batches, augmentations and optimizer state


def test_sft_cli_errors(demo_store, tmp_path, capsys):
    out = tmp_path / "ck"
    assert main(["sft", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "is not a replay store" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", str(out), "--tasks", "5", *TINY_ARGS]) == 2
    assert "no successful demonstration of libero_spatial task 5" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", str(out), "--demos-per-task", "0"]) == 2
    assert "sft.demos_per_task=0 is not allowed" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", str(out), "--resume", *TINY_ARGS]) == 2
    assert "holds no saved SFT state" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", str(out), "--steps", "2", "--sft.batch_size=4", *TINY_ARGS]) == 0
    assert "trained 2 steps on 6 demonstrations and 0 successful policy rollouts of 2 task(s)" in capsys.readouterr().out
    assert main(["sft", demo_store.root, "--out", str(out), "--steps", "2", *TINY_ARGS]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_self_imitation_continues_a_policy_on_its_successful_rollouts(demo_store, tmp_path, capsys):
    rng = np.random.default_rng(3)
    for t, success in ((0, False), (0, True), (1, True), (1, True)):
        demo_store.append(learnable_episode(rng, t, chunks=2, success=success, source="real"))
    rollouts = {}
    for e in demo_store.episodes:
        if e.source == "real" and e.success:
            rollouts.setdefault(str(e.task_id), []).append(e.episode_id)
    start, out = tmp_path / "start", tmp_path / "self"
    train_sft(demo_store.root, str(start), cfg(steps=4, demos_per_task=2))
    r = train_sft(demo_store.root, str(out), cfg(steps=3, demos_per_task=2, rollouts_per_task=1), init=str(start))
    first = {t: ids[:1] for t, ids in rollouts.items()}  # the failed rollout of task 0 is never chosen
    meta = json.loads((out / "policy.json").read_text())
    assert meta["rollouts"] == first and meta["init"] == str(start) and r["rollouts"] == {"0": 1, "1": 1}
    assert meta["bins"] == json.loads((start / "policy.json").read_text())["bins"]
    assert r["rows"] == 2 * 2 * 3 + 2 * 2  # 2 demos of 3 chunks and 1 rollout of 2 chunks per task
    a, b = load_file(str(start / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # trained on from the start checkpoint
    assert main(["sft", demo_store.root, "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nowhere"),
                 *TINY_ARGS]) == 2
    assert "is not a policy checkpoint" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", str(tmp_path / "y"), "--rollouts-per-task", "1", "--tasks", "0-1",
                 "--steps", "1", *TINY_ARGS]) == 0
    assert "on 6 demonstrations and 2 successful policy rollouts" in capsys.readouterr().out
