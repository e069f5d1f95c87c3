"""Two `mbpo-ray train` iterations with the pretrained backbones on tiny random checkpoints saved
here: the policy a LoRA-tuned VLM (policy.arch=pretrained_vla), the world model a pretrained causal
LM extended by the layout's tokens (world_model.pretrained), served by vLLM."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from mbpo_ray.cli import main
from mbpo_ray.config import PolicyConfig
from mbpo_ray.policy import ActionBins, build_policy, save_policy
from tests.policy.test_pretrained_vla import save_tiny_vlm, vla_overrides
from tests.rl.conftest import SPEC, H

SMALL = ["--mbpo.worker_cpus=0.25", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.25"]


def test_train_runs_with_a_pretrained_vla_and_a_pretrained_lm_world_model(ray_cluster, loop_inputs,
                                                                          pretrained_world_model, tmp_path, capsys):
    root, store, _, _ = loop_inputs
    vlm = save_tiny_vlm(tmp_path / "vlm")
    torch.manual_seed(0)
    bins = ActionBins.fit(np.random.default_rng(0).uniform(-0.3, 0.3, (400, 7)), H)
    save_policy(build_policy(PolicyConfig(**vla_overrides(vlm)), bins), tmp_path / "policy",
                {"demos": {}, "store_image_size": SPEC.image_size})
    out = tmp_path / "run"
    code = main(["train", "--policy", str(tmp_path / "policy"), "--world-model", pretrained_world_model,
                 "--store", store, "--out", str(out), "--mbpo.iterations=2", "--mbpo.tasks=0", "--mbpo.branches=4",
                 "--mbpo.n_chunks=2", "--mbpo.learners=1", "--mbpo.real_every=0", "--mbpo.eval_episodes=0",
                 "--mbpo.minibatch_size=4", "--mbpo.updates_per_batch=2", "--mbpo.checkpoint_every=1",
                 "--world_model.engine=vllm", "--logging.videos=1", *SMALL])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["policy_version"] for x in logs] == [1, 2]
    assert all(x["imagine/chunk_transitions"] > 0 for x in logs)
    start = load_file(str(tmp_path / "policy" / "model.safetensors"))
    end = load_file(str(out / "checkpoint" / "policy" / "model.safetensors"))
    moved = {k for k in start if not torch.equal(start[k], end[k])}
    assert moved and all("lora_" in k or not k.startswith("backbone.") for k in moved)  # the backbone is frozen
    assert (out / "videos" / "imagine_branch0_step1.mp4").is_file()
