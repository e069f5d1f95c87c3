"""Token layout: ranges, transition encoding, action bins fitted from data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mbpo_ray.world_model.layout import (
    ACT,
    BOS,
    EOS,
    HEAD,
    KEEP,
    NO,
    REW,
    SPECIALS,
    UNK,
    WRIST,
    YES,
    TokenLayout,
    chunk_sum,
)
from tests.world_model.conftest import tiny_layout


def test_ranges_do_not_overlap():
    lay = tiny_layout()
    assert lay.word_offset == len(SPECIALS)
    assert lay.code_offset == lay.word_offset + len(lay.words)
    assert lay.bin_offset == lay.code_offset + 64 and lay.vocab_size == lay.bin_offset + 256


def test_transition_round_trip(tmp_path):
    lay = tiny_layout()
    rng = np.random.default_rng(0)
    head, wrist, nh, nw = (rng.integers(0, 64, 4) for _ in range(4))
    actions = rng.uniform(-0.9, 0.9, (2, 7))
    p = lay.prompt("Pick up the black bowl, quickly", head, wrist, actions)
    words = len(["pick", "up", "the", "black", "bowl", "quickly"])
    assert p[0] == BOS and p[1 + words] == HEAD and p[-1] == HEAD
    assert p[1 + words - 1] == UNK  # "quickly" is not in the vocabulary
    assert p[2 + words + 4] == WRIST and p[3 + words + 8] == ACT
    bins = np.array(p[4 + words + 8 : -1]) - lay.bin_offset
    assert bins.shape == (14,) and ((bins >= 0) & (bins < 256)).all()
    decoded = lay.bins_to_actions(bins.reshape(2, 7))
    width = (np.array(lay.action_high) - np.array(lay.action_low)) / 256
    inside = (actions >= lay.action_low) & (actions <= lay.action_high)
    assert (np.abs(decoded - actions)[inside] <= (width / 2 + 1e-9)[np.nonzero(inside)[1]]).all()
    nh[:2] = head[:2]  # two head codes stay as they are
    t = lay.target(nh, nw, success=True, head=head, wrist=wrist)
    assert t[4] == WRIST and t[9] == REW and t[10] == YES and t[11] == EOS and len(t) == lay.target_len + 1
    assert t[:2] == [KEEP, KEEP] and KEEP not in t[2:4]
    np.testing.assert_array_equal(lay.current_codes(p)[0], head)
    h, w = lay.split_target(t[:-1], p)
    np.testing.assert_array_equal(h, nh)
    np.testing.assert_array_equal(w, nw)
    with pytest.raises(ValueError, match="pass the prompt"):
        lay.split_target(t[:-1])
    with pytest.raises(ValueError, match="pass the current head and wrist codes"):
        lay.target(nh, nw, success=True)
    assert lay.target(nh, nw, success=False, head=head, wrist=wrist)[10] == NO
    assert len(p) + len(t) <= lay.max_len()
    lay.save(tmp_path / "layout.json")
    assert TokenLayout.load(tmp_path / "layout.json") == lay
    plain = dataclasses.replace(lay, keep_codes=False)  # absolute codes everywhere
    t = plain.target(nh, nw, success=True)
    assert KEEP not in t and KEEP not in plain.view_ids and KEEP in lay.view_ids
    np.testing.assert_array_equal(plain.split_target(t[:-1])[0], nh)


def test_short_chunk_is_padded_and_bad_codes_rejected():
    lay = tiny_layout()
    p = lay.prompt("open the top drawer", np.zeros(4, int), np.zeros(4, int), np.full((1, 7), 0.5))
    bins = np.array(p[-15:-1]).reshape(2, 7)
    np.testing.assert_array_equal(bins[0], bins[1])  # the last action is held
    with pytest.raises(ValueError, match="a view has 5 codes; this layout expects 4"):
        lay.prompt("x", np.zeros(5, int), np.zeros(4, int), np.zeros((2, 7)))


def test_bins_fitted_per_dimension():
    rng = np.random.default_rng(1)
    acts = np.stack([rng.uniform(-0.2, 0.2, 5000), rng.uniform(-1, 1, 5000)], axis=1)
    lay = TokenLayout.fit(["a"], acts, 16, 4, 2)
    assert abs(lay.action_low[0] + 0.2) < 0.01 and abs(lay.action_high[1] - 1) < 0.03
    b = lay.action_bins(acts)
    for d in range(2):  # uniform data fills the bins about evenly; the 1% tails land in the end bins
        counts = np.bincount(b[:, d], minlength=256)
        assert counts.min() > 0 and counts[1:-1].max() < 50 and 40 < counts[0] < 100 and 40 < counts[-1] < 100


def test_action_sums_follow_the_bins(tmp_path):
    rng = np.random.default_rng(2)
    chunks = rng.uniform(-0.5, 0.5, (400, 2, 7))
    sums = np.stack([chunk_sum(c, 2, 7) for c in chunks])
    lay = TokenLayout.fit(["pick", "up"], chunks.reshape(-1, 7), 64, 4, 2, chunk_sums=sums)
    plain = TokenLayout.fit(["pick", "up"], chunks.reshape(-1, 7), 64, 4, 2)
    assert lay.action_sums and not plain.action_sums and lay.action_tokens == plain.action_tokens + 7
    assert lay.sum_high[0] > plain.action_high[0]  # the sums' own ranges, wider than one action's
    head, wrist = rng.integers(0, 64, 4), rng.integers(0, 64, 4)
    p, q = lay.prompt("pick up", head, wrist, chunks[0]), plain.prompt("pick up", head, wrist, chunks[0])
    assert p[:-8] == q[:-1] and p[-1] == HEAD and len(p) == len(q) + 7
    extra = np.array(p[-8:-1]) - lay.bin_offset
    np.testing.assert_array_equal(extra, np.clip(np.floor((chunks[0].sum(0) - np.array(lay.sum_low))
                                                          / (np.array(lay.sum_high) - np.array(lay.sum_low)) * 256), 0, 255))
    # another chunk, other sums
    assert lay.prompt("pick up", head, wrist, chunks[1])[-8:-1] != p[-8:-1]
    np.testing.assert_array_equal(lay.current_codes(p)[1], wrist)
    t = lay.target(head, wrist, success=False, head=head, wrist=wrist)
    assert len(p) + len(t) <= lay.max_len() and lay.max_len() == plain.max_len() + 7
    lay.save(tmp_path / "layout.json")
    assert TokenLayout.load(tmp_path / "layout.json") == lay
    # a layout saved before action sums existed loads as one without them
    old = {k: v for k, v in dataclasses.asdict(plain).items() if k not in ("action_sums", "sum_low", "sum_high")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert TokenLayout.load(tmp_path / "old.json") == plain
    # a short chunk is summed as the prompt writes it: its last action held
    np.testing.assert_allclose(chunk_sum(chunks[0][:1], 2, 7), 2 * chunks[0][0])
