"""``policy.arch=pretrained_vla`` on a tiny random Idefics3 (SmolVLM family) saved here: shapes,
trainable parameters, save/load, SFT, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbpo_ray.cli import main
from mbpo_ray.config import ConfigError, PolicyConfig, build_config
from mbpo_ray.policy import ActionBins, build_policy, load_policy, save_policy
from mbpo_ray.policy.pretrained_vla import BackboneError, PretrainedVLA
from mbpo_ray.policy.sft import train_sft
from tests.policy.test_policy import batch

H = 4
VOCAB = "pick up the black bowl and place it on plate open top drawer put 0 1 2 3"
WORDS = ["<pad>", "<unk>", "<image>", "<fake_token_around_image>", "<end_of_utterance>", *VOCAB.split()]


def save_tiny_vlm(path, family: str = "idefics3") -> str:
    """A random Idefics3 or SmolVLM (2 SigLIP layers at 32 px, 2 Llama layers, width 64) and a
    word-level tokenizer, both written with ``save_pretrained``; nothing downloaded."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    name = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[family]
    conf = getattr(transformers, f"{name}Config")(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=len(WORDS), pad_token_id=0),
        image_token_id=2, scale_factor=2, pad_token_id=0)
    torch.manual_seed(0)
    getattr(transformers, f"{name}ForConditionalGeneration")(conf).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> str:
    return save_tiny_vlm(tmp_path_factory.mktemp("vlm"))


def vla_overrides(vlm: str, **kw) -> dict:
    return {"arch": "pretrained_vla", "backbone_path": vlm, "image_size": 16, "lora_rank": 4, **kw}


def tiny_vla(vlm: str, seed: int = 0, **kw) -> PretrainedVLA:
    torch.manual_seed(seed)
    bins = ActionBins.fit(np.random.default_rng(seed).uniform(-1, 1, (400, 7)), H)
    return build_policy(PolicyConfig(**vla_overrides(vlm, **kw)), bins).eval()


def test_act_evaluate_shapes_and_only_lora_and_heads_get_gradients(vlm_dir):
    policy = tiny_vla(vlm_dir)
    obs = batch(3)
    out = policy.act(obs, generator=torch.Generator().manual_seed(1))
    assert out.actions.shape == (3, H, 7) and out.bins.shape == (3, H, 7) and out.value.shape == (3,)
    assert torch.isfinite(out.log_prob).all() and (out.log_prob < 0).all()
    logp, ent, value = policy.evaluate(obs, out.actions)
    torch.testing.assert_close(logp, out.log_prob, rtol=0, atol=1e-3)
    assert (ent > 0).all() and (ent <= H * 7 * math.log(256) + 1e-3).all()
    (logp.sum() + value.sum()).backward()
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or not n.startswith("backbone.") for n in trainable)
    assert {"action_queries", "action_head.weight", "value_head.2.weight"} <= trainable
    assert any(".text_model." in n for n in trainable) and any(".vision_model." in n for n in trainable)
    for n, p in policy.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    # a row's output does not depend on the rest of its batch (instruction padding is masked)
    alone = policy.act(batch(3), greedy=True)
    first = policy.act(type(obs)(obs.head[:1], obs.wrist[:1], obs.proprio[:1], obs.instruction[:1]), greedy=True)
    torch.testing.assert_close(first.log_prob, alone.log_prob[:1], rtol=0, atol=1e-4)
    assert len(policy.fsdp_units()) == 4


def test_full_finetune_trains_the_whole_backbone(vlm_dir):
    policy = tiny_vla(vlm_dir, lora_rank=0)
    assert all(p.requires_grad for p in policy.parameters())
    assert not any("lora_" in n for n, _ in policy.named_parameters())


def test_save_load_round_trip_gives_the_same_greedy_actions(vlm_dir, tmp_path):
    policy = tiny_vla(vlm_dir)
    with torch.no_grad():  # LoRA's B starts at zero: move it, so the adapters matter
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    obs = batch(4, seed=3)
    before = policy.act(obs, greedy=True)
    save_policy(policy, tmp_path / "ck", {"demos": {}})
    loaded = load_policy(tmp_path / "ck")
    after = loaded.act(obs, greedy=True)
    assert isinstance(loaded, PretrainedVLA) and loaded.cfg.backbone_path == vlm_dir
    assert torch.equal(before.bins, after.bins)
    torch.testing.assert_close(before.log_prob, after.log_prob)
    torch.testing.assert_close(before.value, after.value)


def test_sft_loss_falls(vlm_dir, demo_store, tmp_path):
    cfg = build_config(overrides={"policy": vla_overrides(vlm_dir), "sft": {
        "batch_size": 8, "lr": 3e-3, "warmup_steps": 0, "steps": 20, "checkpoint_every": 20}})
    r = train_sft(demo_store.root, str(tmp_path / "ck"), cfg)
    print("final SFT loss", r["final_loss"], r["steps_per_s"])
    # it starts at about ln(256), the uniform distribution (small random logits)
    assert r["steps"] == 20 and r["final_loss"] < 0.8 * math.log(256)
    assert isinstance(load_policy(tmp_path / "ck"), PretrainedVLA)


def test_smolvlm_family_acts_and_round_trips(tmp_path):
    policy = tiny_vla(save_tiny_vlm(tmp_path / "smol", "smolvlm"))
    assert type(policy.backbone).__name__ == "SmolVLMModel"
    obs = batch(2)
    before = policy.act(obs, greedy=True)
    assert before.actions.shape == (2, H, 7) and torch.isfinite(before.log_prob).all()
    save_policy(policy, tmp_path / "ck")
    assert torch.equal(load_policy(tmp_path / "ck").act(obs, greedy=True).bins, before.bins)


def test_bad_backbone_path_errors(tmp_path, demo_store, capsys):
    with pytest.raises(ConfigError, match="policy.backbone_path"):
        PolicyConfig(arch="pretrained_vla")
    with pytest.raises(BackboneError, match="does not exist.*--policy.backbone_path=DIR"):
        tiny_vla(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        tiny_vla(str(tmp_path / "empty"))
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(BackboneError, match="'llama' model, not a supported vision-language model"):
        tiny_vla(str(tmp_path / "llm"))
    # the CLI names the field and what to pass
    out = str(tmp_path / "ck")
    assert main(["sft", demo_store.root, "--out", out, "--policy.arch=pretrained_vla"]) == 2
    assert "policy.backbone_path='' is not allowed" in capsys.readouterr().err
    assert main(["sft", demo_store.root, "--out", out, "--policy.arch=pretrained_vla",
                 f"--policy.backbone_path={tmp_path / 'nowhere'}"]) == 2
    assert "does not exist: pass --policy.backbone_path=DIR" in capsys.readouterr().err
