"""The learner backends: FSDP2 (over gloo here) gives DDP's losses and
weights, and its checkpoints (gathered weights, optimizer state by parameter name) resume; bfloat16
autocast trains close to float32."""

from __future__ import annotations

import ray
import torch

from learners.policy_learner import LearnerGroup
from mbpo_ray.config import build_config
from mbpo_ray.mbpo import actor_config
from mbpo_ray.policy import load_policy, read_policy_meta
from mbpo_ray.weights import WeightStore
from tests.rl.test_bc import branches

TOL = 1e-5  # FSDP reduce-scatters what DDP all-reduces: the same mean, summed in another order


def config(policy_dir: str, backend: str) -> dict:
    cfg = build_config(overrides={"mbpo": {"learner_backend": backend, "branches": 8, "minibatch_size": 4,
                                           "updates_per_batch": 1, "actor_lr": 1e-3, "kl_coef": 0.1}})
    return actor_config(cfg, policy_dir)[0]


def three_updates(policy_dir: str, backend: str, out, optimizer_state: str | None = None):
    group = LearnerGroup(config(policy_dir, backend), policy_dir, str(out / "weights"), 2, num_cpus=0.25,
                         optimizer_state=optimizer_state)
    try:
        losses = [group.update(branches(policy_dir, {1: 0, 6: 1}, b=8, seed=k), k + 1, seed=k)["loss"]
                  for k in range(3)]
        sums = group.checksums()
        group.save(str(out / "saved"), {"store_image_size": read_policy_meta(policy_dir)["store_image_size"]})
        return losses, sums
    finally:
        group.close()


def test_fsdp_matches_ddp_and_its_checkpoint_resumes(ray_cluster, loop_inputs, tmp_path):
    _, _, policy_dir, _ = loop_inputs
    ddp, ddp_sums = three_updates(policy_dir, "ddp", tmp_path / "ddp")
    fsdp, fsdp_sums = three_updates(policy_dir, "fsdp", tmp_path / "fsdp")
    assert max(abs(a - b) for a, b in zip(ddp, fsdp, strict=True)) < TOL, (ddp, fsdp)
    assert fsdp_sums[0] == fsdp_sums[1] and abs(ddp_sums[0] - fsdp_sums[0]) < 1e-3
    # the published and the saved weights are whole (gathered from the shards) and equal DDP's
    a, _ = WeightStore(str(tmp_path / "ddp" / "weights")).load("policy", 3)
    b, _ = WeightStore(str(tmp_path / "fsdp" / "weights")).load("policy", 3)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    saved = load_policy(tmp_path / "fsdp" / "saved").state_dict()
    assert all(torch.allclose(saved[k], b[k]) for k in b)
    state = torch.load(tmp_path / "fsdp" / "saved" / "optimizer.pt", weights_only=False)
    assert any(isinstance(k, str) for k in state["state"])  # by parameter name
    # resumed from its checkpoint (FSDP's optimizer state, or DDP's carried into shards), both continue
    # the same way
    on_fsdp, _ = three_updates(str(tmp_path / "fsdp" / "saved"), "fsdp", tmp_path / "r1",
                               str(tmp_path / "fsdp" / "saved" / "optimizer.pt"))
    on_ddp, _ = three_updates(str(tmp_path / "ddp" / "saved"), "fsdp", tmp_path / "r2",
                              str(tmp_path / "ddp" / "saved" / "optimizer.pt"))
    assert max(abs(x - y) for x, y in zip(on_fsdp, on_ddp, strict=True)) < TOL
    assert ray.is_initialized()


def test_bf16_autocast_trains_close_to_float32(loop_inputs, tmp_path):
    """mbpo.learner_precision=bf16 (the default on a GPU) on the CPU: the forward passes run in bfloat16
    (the loss differs from float32's in its low bits) and the update stays close to float32's."""
    from learners.policy_learner import PolicyLearner

    _, _, policy_dir, _ = loop_inputs
    br = branches(policy_dir, {1: 0, 6: 1}, b=8, seed=0)
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = build_config(overrides={"mbpo": {"learner_precision": precision, "branches": 8, "minibatch_size": 8,
                                               "updates_per_batch": 1}})
        learner = PolicyLearner(actor_config(cfg, policy_dir)[0], policy_dir, str(tmp_path / precision), 0, 1)
        assert learner.bf16 == (precision == "bf16")
        out[precision] = learner.update(br, 1, seed=0)
    a, b = out["fp32"], out["bf16"]
    assert a["loss"] != b["loss"] and abs(a["loss"] - b["loss"]) < 0.05 * max(1.0, abs(a["loss"]))
    assert abs(a["entropy"] - b["entropy"]) < 0.02 * a["entropy"]
