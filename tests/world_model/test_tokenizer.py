"""Image tokenizer (diffusers VQModel): codes shape, decode, training lowers reconstruction error."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_ray.world_model.tokenizer import ImageTokenizer, TokenizerPreset, paste_kept, psnr, resize_frames

TINY = TokenizerPreset(image_size=16, codes_side=4, codebook_size=32, channels=(16, 16, 32), latent_channels=8)


def scenes(n: int, seed: int = 0) -> np.ndarray:
    """Coloured rectangles on a plain background: structured images a VQ model can learn quickly."""
    rng = np.random.default_rng(seed)
    f = np.zeros((n, 32, 32, 3), np.uint8) + np.array([200, 180, 150], np.uint8)
    for i in range(n):
        x, y = rng.integers(0, 20, 2)
        f[i, y : y + 12, x : x + 12] = rng.integers(0, 256, 3)
    return f


def test_encode_decode_shapes_and_training(tmp_path):
    frames = scenes(64)
    tok = ImageTokenizer(TINY)
    ref = resize_frames(frames, 16)
    before = psnr(tok.decode(tok.encode(frames)), ref).mean()
    metrics = list(tok.train(frames, steps=150, batch=16, lr=3e-3))
    codes = tok.encode(frames)
    assert codes.shape == (64, 16) and codes.min() >= 0 and codes.max() < 32
    rec = tok.decode(codes)
    assert rec.shape == (64, 16, 16, 3) and rec.dtype == np.uint8
    after = psnr(rec, ref).mean()
    assert metrics[-1]["recon_mse"] < metrics[0]["recon_mse"] / 2 and after > before + 3
    tok.save(tmp_path / "tok", {"psnr": float(after)})
    again = ImageTokenizer.load(tmp_path / "tok")
    np.testing.assert_array_equal(again.encode(frames), codes)


def test_bad_preset_and_missing_dir(tmp_path):
    with pytest.raises(ValueError, match="3 blocks downsample 16 to 4, not 8"):
        ImageTokenizer(TokenizerPreset(16, 8, 32, (16, 16, 32)))
    with pytest.raises(FileNotFoundError, match="not an image tokenizer"):
        ImageTokenizer.load(tmp_path)


def test_kept_patches_show_the_current_pixels():
    rng = np.random.default_rng(0)
    cur, dec = (rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    cur_codes = rng.integers(0, 32, (3, 16))  # a 4x4 grid of 4x4-pixel patches
    nxt = cur_codes.copy()
    nxt[1] = (cur_codes[1] + 1) % 32  # every code changed
    nxt[2, 5] = (cur_codes[2, 5] + 1) % 32  # one code changed: patch row 1, column 1
    out = paste_kept(dec, cur, nxt, cur_codes)
    np.testing.assert_array_equal(out[0], cur[0])  # all kept: the current frame itself
    np.testing.assert_array_equal(out[1], dec[1])  # none kept: the decoded frame
    changed = np.zeros((16, 16), bool)
    changed[4:8, 4:8] = True
    np.testing.assert_array_equal(out[2][changed], dec[2][changed])
    np.testing.assert_array_equal(out[2][~changed], cur[2][~changed])
    with pytest.raises(ValueError, match="do not fit one patch grid"):
        paste_kept(dec, cur[:, :8], nxt, cur_codes)
