"""train-tokenizer -> train-world-model (resumable) -> eval-world-model, on a tiny store made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbpo_ray.cli import main
from mbpo_ray.policy import ActionBins, build_policy, save_policy
from mbpo_ray.replay import ReplayStore, StoreSpec
from tests.conftest import random_episode
from tests.policy.conftest import tiny_policy_config

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
                 "--world_model.steps=5", "--world_model.reward_weight=20"]) == 0
    assert json.loads((ckpt / "train_config.json").read_text())["reward_weight"] == 20
    assert json.loads((ckpt / "state" / "step.json").read_text())["step"] == 5
    capsys.readouterr()
    # a resume trains with the settings the run was started with; only what it names changes
    assert main(["train-world-model", store, "--tokenizer", str(tok), "--out", str(ckpt),
                 "--world_model.steps=10", "--resume"]) == 0
    assert "changed by this command: world_model.steps 5 -> 10" in capsys.readouterr().err
    assert json.loads((ckpt / "state" / "step.json").read_text())["step"] == 10
    resumed = json.loads((ckpt / "train_config.json").read_text())
    assert (resumed["reward_weight"], resumed["hidden_size"], resumed["steps"]) == (20, 32, 10)
    split = json.loads((ckpt / "split.json").read_text())
    assert len(split["heldout"]) == 2 and len(split["train"]) == 4
    assert (ckpt / "model" / "model.safetensors").is_file() and any((ckpt / "tb").iterdir())
    assert json.loads((ckpt / "best.json").read_text())["step"] in (5, 10)
    _best_and_last_weights(ckpt)

    policy = tmp_path / "policy"
    save_policy(build_policy(tiny_policy_config(), ActionBins.fit(np.random.default_rng(0).uniform(-1, 1, (99, 7)), 4)),
                policy, {"demos": {}, "store_image_size": SMALL.image_size})
    assert main(["eval-world-model", str(ckpt), store, "--out", str(report), "--engine", "hf", "--policy", str(policy),
                 "--temperature", "0.7"]) == 0
    assert "reward F1 under counterfactual actions" in capsys.readouterr().out
    q = json.loads((report / "world_model_quality.json").read_text())
    assert q["temperature"] == 0.7 and q["sampled"]["temperature"] == 0.7 and q["keep_pixels"] is True
    for block in (q, q["sampled"]):
        assert set(block["counterfactual"]) == {"recorded", "policy_tail", "padded_nonfinal"}
        assert all(c["transitions"] == 6 for c in block["counterfactual"].values())
        assert set(block["action_sensitivity"]) == {"head", "wrist"}
        assert sum(b["reward"]["transitions"] for b in block["by_source"].values()) == 6
        for b in block["by_source"].values():
            assert set(b["action_sensitivity"]) == {"head", "wrist"}
            if b["reward"]["transitions"] == 6:  # one source holds every transition: the same numbers as overall
                assert b["action_sensitivity"] == block["action_sensitivity"]
    for view in ("head", "wrist"):
        assert set(q[view]) == {"psnr", "psnr_copy_baseline", "ssim", "ssim_copy_baseline", "psnr_copy_codes",
                                "psnr_codes_ceiling", "psnr_codes_ceiling_kept"}
        assert all(0 < q[view][k] < 100 for k in ("psnr", "psnr_copy_codes", "psnr_codes_ceiling",
                                                  "psnr_codes_ceiling_kept"))
        assert -1 <= q[view]["ssim"] <= 1
    assert q["reward"]["transitions"] == 6 and 0 <= q["reward"]["accuracy"] <= 1
    assert (report / "branch_grid.png").is_file()


def _best_and_last_weights(ckpt):
    """``load_trained``: the served weights, or the resume state's last ones; clear errors otherwise."""
    import torch
    from safetensors.torch import load_file

    from mbpo_ray.world_model.train import load_trained

    state, served = load_file(ckpt / "state" / "model.safetensors"), load_file(ckpt / "model" / "model.safetensors")
    last, best = load_trained(ckpt, "last").state_dict(), load_trained(ckpt).state_dict()
    assert all(torch.equal(last[k], state[k]) for k in state) and all(torch.equal(best[k], served[k]) for k in served)
    with pytest.raises(ValueError, match="choose 'best' or 'last'"):
        load_trained(ckpt, "first")
    (ckpt / "state" / "model.safetensors").rename(ckpt / "state" / "moved")
    with pytest.raises(FileNotFoundError, match="its last weights are not there"):
        load_trained(ckpt, "last")
    (ckpt / "state" / "moved").rename(ckpt / "state" / "model.safetensors")


def test_missing_checkpoint(store, tmp_path, capsys):
    assert main(["eval-world-model", str(tmp_path / "nope"), store, "--out", str(tmp_path / "r")]) == 2
    assert "is not a world-model checkpoint" in capsys.readouterr().err


def test_reward_weight_counts_the_answer_more():
    import torch
    import torch.nn.functional as F

    from mbpo_ray.world_model.train import IGNORE, segment_losses

    logits = torch.zeros(1, 5, 8)
    logits[..., 1:4] = 3.0  # image-code targets likely, the reward answer (token 4) not

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": logits})()

    ids = torch.zeros(1, 5, dtype=torch.long)
    labels = torch.tensor([[IGNORE, 1, 2, 3, 4]])
    seg = torch.tensor([[-1, 0, 1, 1, 2]])  # head, wrist, wrist, reward
    ce = F.cross_entropy(logits[0, :-1], labels[0, 1:], reduction="none")
    out = segment_losses(Fixed(), ids, labels, seg, reward_weight=5.0)
    assert torch.isclose(out["loss"], (ce[:3].sum() + 5 * ce[3]) / 8)
    assert torch.isclose(segment_losses(Fixed(), ids, labels, seg)["loss"], ce.mean())
    assert torch.isclose(out["reward"], ce[3])
    # with keep codes, view codes that are not <keep> (here the wrist's token 3 stands for <keep>) count
    # change_weight times; <keep> targets and the answer keep their weights
    out = segment_losses(Fixed(), ids, labels, seg, reward_weight=5.0, change_weight=4.0, keep=3)
    assert torch.isclose(out["loss"], (4 * ce[0] + 4 * ce[1] + ce[2] + 5 * ce[3]) / 14)
    assert not torch.isclose(out["loss"], segment_losses(Fixed(), ids, labels, seg, reward_weight=5.0)["loss"])


def test_change_weight_needs_keep_codes():
    from mbpo_ray.config import ConfigError, WorldModelConfig

    assert WorldModelConfig(change_weight=4.0).change_weight == 4.0
    with pytest.raises(ConfigError, match="world_model.change_weight.*keep_codes"):
        WorldModelConfig(change_weight=4.0, keep_codes=False)
    with pytest.raises(ConfigError, match="world_model.change_weight"):
        WorldModelConfig(change_weight=-1.0)


def test_action_sums_train_and_imagine(store, tmp_path, capsys):
    tok, ckpt, report = tmp_path / "tok", tmp_path / "wm", tmp_path / "report"
    assert main(["train-tokenizer", store, "--out", str(tok), *TOK]) == 0
    assert main(["train-world-model", store, "--tokenizer", str(tok), "--out", str(ckpt), *WM,
                 "--world_model.steps=3", "--world_model.action_sums=true", "--world_model.change_weight=4"]) == 0
    layout = json.loads((ckpt / "layout.json").read_text())
    assert layout["action_sums"] and len(layout["sum_low"]) == len(layout["sum_high"]) == 7
    capsys.readouterr()
    # a resume may not change the layout under the trained model
    assert main(["train-world-model", store, "--tokenizer", str(tok), "--out", str(ckpt), "--resume",
                 "--world_model.steps=4", "--world_model.action_sums=false"]) == 2
    assert "was trained with world_model.action_sums=true" in capsys.readouterr().err
    assert main(["eval-world-model", str(ckpt), store, "--out", str(report), "--engine", "hf"]) == 0
    q = json.loads((report / "world_model_quality.json").read_text())
    assert q["reward"]["transitions"] == 6 and 0 < q["head"]["psnr"] < 100
