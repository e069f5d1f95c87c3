"""world_model.pretrained: a local causal LM (own vocabulary) extended by the layout's tokens; a
pretrained diffusers VQModel as the image tokenizer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mbpo_ray.config import WorldModelConfig
from mbpo_ray.replay import ReplayStore, StoreSpec
from mbpo_ray.world_model.layout import SPECIALS, TokenLayout
from mbpo_ray.world_model.tokenizer import ImageTokenizer, TokenizerPreset
from tests.conftest import random_episode

BASE = 300  # the tiny LM's own vocabulary
SMALL = StoreSpec(image_size=32, chunk_size=2)
TINY_VQ = TokenizerPreset(image_size=16, codes_side=4, codebook_size=32, channels=(16, 16, 32), latent_channels=8)
WM = WorldModelConfig(steps=40, batch_size=8, lr=3e-3, warmup_steps=5, checkpoint_every=40, holdout_episodes=0.34)


def save_tiny_lm(path, arch: str = "qwen2") -> torch.nn.Module:
    """A random tiny causal LM with its own 300-token vocabulary, saved with save_pretrained."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    conf = AutoConfig.for_model(arch, vocab_size=BASE, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=128, max_position_embeddings=512,
                                tie_word_embeddings=arch == "qwen2", bos_token_id=1, eos_token_id=2)
    model = AutoModelForCausalLM.from_config(conf)
    model.generation_config.repetition_penalty = 1.3  # an LM's own sampling default that must not leak
    model.save_pretrained(path, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pre") / "store")
    s = ReplayStore.create(path, SMALL)
    rng = np.random.default_rng(0)
    for k in range(6):
        s.append(random_episode(rng, spec=SMALL, chunks=4, task_id=k % 2, success=k % 2 == 0)[0])
    return path


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    """A diffusers VQModel saved on its own (no tokenizer.json): what a downloaded VQ model looks like."""
    path = tmp_path_factory.mktemp("pre") / "vq"
    torch.manual_seed(0)
    ImageTokenizer(TINY_VQ).model.save_pretrained(path)
    return path


def test_pretrained_vq_tokenizer(vq_dir, tmp_path):
    tok = ImageTokenizer.load(vq_dir)  # a raw VQModel folder is accepted where a tokenizer folder is
    assert (tok.preset.codebook_size, tok.preset.codes_side, tok.preset.image_size) == (32, 4, 16)
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    codes = tok.encode(frames)
    assert codes.shape == (5, 16) and codes.min() >= 0 and codes.max() < 32
    rec = tok.decode(codes)
    assert rec.shape == (5, 16, 16, 3) and rec.dtype == np.uint8
    np.testing.assert_array_equal(tok.decode(codes), rec)  # deterministic (eval mode)
    tok.save(tmp_path / "tok")
    np.testing.assert_array_equal(ImageTokenizer.load(tmp_path / "tok").encode(frames), codes)
    assert ImageTokenizer.from_pretrained_vq(vq_dir, image_size=32).preset.codes_side == 8
    with pytest.raises(FileNotFoundError, match="not a diffusers VQModel folder"):
        ImageTokenizer.from_pretrained_vq(tmp_path)


def test_layout_offset_and_old_layout_json(tmp_path):
    rng = np.random.default_rng(0)
    plain = TokenLayout.fit(["open the drawer"], rng.uniform(-1, 1, (50, 7)), 32, 4, 2)
    lay = dataclasses.replace(plain, base_vocab=BASE)
    assert lay.vocab_size == BASE + plain.vocab_size and lay.sp.pad == BASE and lay.sp.keep == BASE + len(SPECIALS) - 1
    head, wrist, nxt = rng.integers(0, 32, 4), rng.integers(0, 32, 4), rng.integers(0, 32, 4)
    p, t = lay.prompt("open the drawer", head, wrist, rng.uniform(-1, 1, (2, 7))), lay.target(nxt, nxt, True, head, wrist)
    assert min(p + t) >= BASE and max(p + t) < lay.vocab_size
    q = plain.prompt("open the drawer", head, wrist, np.zeros((2, 7)))
    assert (np.asarray(lay.prompt("open the drawer", head, wrist, np.zeros((2, 7)))) - BASE).tolist() == q
    got = lay.split_target(t[:-1], p)
    assert np.array_equal(got[0], nxt) and np.array_equal(got[1], nxt)
    data = dataclasses.asdict(plain)
    data.pop("base_vocab")  # a layout.json written before the field existed
    (tmp_path / "layout.json").write_text(json.dumps(data))
    assert TokenLayout.load(tmp_path / "layout.json") == plain


def test_bad_pretrained_folders(tmp_path):
    from transformers import CLIPVisionConfig

    from mbpo_ray.world_model.pretrained import pretrained_config

    with pytest.raises(FileNotFoundError, match="no such folder"):
        pretrained_config(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        pretrained_config(tmp_path)
    CLIPVisionConfig().save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="not a causal LM"):
        pretrained_config(tmp_path / "clip")


def train_from_lm(root, store, vq_dir, arch: str, steps: int):
    """Save a tiny LM, train a world model from it; returns (original LM, checkpoint, layout, config)."""
    from mbpo_ray.world_model.train import train_world_model

    lm = save_tiny_lm(root / "lm", arch)
    cfg = dataclasses.replace(WM, pretrained=str(root / "lm"), steps=steps, checkpoint_every=steps)
    train_world_model(store, str(vq_dir), str(root / "wm"), cfg, seed=0)
    return lm, root / "wm", TokenLayout.load(root / "wm" / "layout.json"), cfg


def train_loss(model, ckpt, store, layout) -> float:
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.train import TokenData, segment_losses

    split = json.loads((ckpt / "split.json").read_text())
    data = TokenData(load_episodes(ReplayStore.open(store), split["train"]), ImageTokenizer.load(ckpt / "tokenizer"),
                     layout)
    with torch.no_grad():
        return float(segment_losses(model.eval(), *data.batch(range(len(data.rows)), layout), pad=layout.sp.pad)["loss"])


def check_carried(lm, ckpt, store, layout, cfg):
    """The LM's rows carried unchanged into the backbone; the saved model is the resized one; loss fell."""
    from transformers import AutoModelForCausalLM

    from mbpo_ray.world_model.train import build_backbone

    assert layout.base_vocab == BASE and layout.sp.pad == BASE
    fresh = build_backbone(cfg, layout)
    emb = fresh.get_input_embeddings().weight
    assert emb.shape[0] == layout.vocab_size == fresh.config.vocab_size
    torch.testing.assert_close(emb[:BASE], lm.get_input_embeddings().weight, rtol=0, atol=0)
    head = fresh.get_output_embeddings().weight
    assert head.shape[0] == layout.vocab_size
    if lm.config.tie_word_embeddings:
        assert head.data_ptr() == emb.data_ptr()
    else:
        torch.testing.assert_close(head[:BASE], lm.get_output_embeddings().weight, rtol=0, atol=0)
    torch.testing.assert_close(fresh.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    saved = json.loads((ckpt / "model" / "config.json").read_text())
    assert saved["vocab_size"] == layout.vocab_size and saved["tie_word_embeddings"] == lm.config.tie_word_embeddings
    assert "repetition_penalty" not in json.loads((ckpt / "model" / "generation_config.json").read_text())
    trained = AutoModelForCausalLM.from_pretrained(ckpt / "model")
    before, after = train_loss(fresh, ckpt, store, layout), train_loss(trained, ckpt, store, layout)
    assert after < 0.7 * before, (before, after)


def check_engines_agree(ckpt, store, layout):
    """Greedy tokens on held-out prompts: identical in the hf and vllm engines, all in the layout's ids."""
    import robosuite  # noqa: F401  (as in a process that also runs LIBERO)

    from mbpo_ray.world_model.data import load_episodes, sequences
    from mbpo_ray.world_model.engines.base import make_engine

    tok = ImageTokenizer.load(ckpt / "tokenizer")
    ep = load_episodes(ReplayStore.open(store), json.loads((ckpt / "split.json").read_text())["heldout"])
    prompts = sequences(ep, tok.encode(ep.head), tok.encode(ep.wrist), layout, ep.transitions())[0][:6]
    hf = make_engine("hf", str(ckpt / "model"), layout)
    vl = make_engine("vllm", str(ckpt / "model"), layout, max_num_seqs=8)
    try:
        a, b = hf.imagine(prompts), vl.imagine(prompts)
    finally:
        vl.close()
    k, sp = layout.codes_per_view, layout.sp
    for o in a + b:
        assert len(o.tokens) == layout.target_len and min(o.tokens) >= BASE
        assert o.tokens[k] == sp.wrist and o.tokens[2 * k + 1] == sp.rew and o.tokens[-1] in (sp.yes, sp.no)
        assert ((o.head >= 0) & (o.head < layout.codebook_size)).all() and o.head.shape == (k,)
        assert (o.p_yes > 0.5) == (o.tokens[-1] == sp.yes)
    assert [o.tokens for o in a] == [o.tokens for o in b]
    np.testing.assert_allclose([o.p_yes for o in a], [o.p_yes for o in b], atol=1e-3)
    np.testing.assert_allclose([o.uncertainty for o in a], [o.uncertainty for o in b], rtol=1e-3, atol=1e-3)


def test_qwen2_tied_backbone_trains_and_serves(store, vq_dir, tmp_path):
    lm, ckpt, layout, cfg = train_from_lm(tmp_path, store, vq_dir, "qwen2", steps=40)
    check_carried(lm, ckpt, store, layout, cfg)
    check_engines_agree(ckpt, store, layout)


def test_llama_untied_backbone_trains_and_serves(store, vq_dir, tmp_path):
    from mbpo_ray.world_model.pretrained import load_pretrained_backbone

    lm, ckpt, layout, cfg = train_from_lm(tmp_path, store, vq_dir, "llama", steps=40)
    check_carried(lm, ckpt, store, layout, cfg)
    check_engines_agree(ckpt, store, layout)
    with pytest.raises(ValueError, match="a layout fitted for another backbone"):
        load_pretrained_backbone(cfg.pretrained, dataclasses.replace(layout, base_vocab=BASE + 1))


def test_weights_under_another_prefix_are_refused(tmp_path):
    """AutoModelForCausalLM maps an Emu3ForConditionalGeneration folder to Emu3ForCausalLM, whose weights
    then all load missing (random): refused instead of trained from silently random weights."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    from mbpo_ray.world_model.pretrained import load_pretrained_backbone

    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    text = {"vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 512, **ids}
    vq = {"codebook_size": 16, "embed_dim": 8, "latent_channels": 8, "base_channels": 32, "channel_multiplier": [1, 1],
          "num_res_blocks": 1, "attn_resolutions": [], "temporal_downsample_factor": 1}
    vocab = {"<image>": 5, "<|extra_200|>": 6, **{f"<|visual token {i:06d}|>": 10 + i for i in range(16)}}
    conf = Emu3Config(vq_config=vq, text_config=text, vocabulary_map=vocab, **ids)
    Emu3ForConditionalGeneration(conf).save_pretrained(tmp_path / "emu3")
    rng = np.random.default_rng(0)
    layout = TokenLayout.fit(["open the drawer"], rng.uniform(-1, 1, (50, 7)), 32, 4, 2, base_vocab=40)
    with pytest.raises(ValueError, match="weights of Emu3ForCausalLM are not in the checkpoint"):
        load_pretrained_backbone(tmp_path / "emu3", layout)
