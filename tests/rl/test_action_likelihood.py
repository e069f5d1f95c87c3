"""benchmarks/action_likelihood.py: the likelihood a world model gives a branch's real next frame under its
own and its siblings' actions, on hand-made likelihoods and a tiny world model."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.action_likelihood import differing_codes, pair_nll, scores
from benchmarks.sibling_fidelity import load_siblings
from mbpo_ray.world_model.layout import TokenLayout
from mbpo_ray.world_model.tokenizer import ImageTokenizer
from mbpo_ray.world_model.train import collate, segment_losses
from tests.rl.test_sibling_fidelity import _branch_store


def _nll(group: np.ndarray, own: float, other: float) -> np.ndarray:
    """NLL[i, j, part]: ``own`` on the diagonal, ``other`` elsewhere within a group, NaN across groups."""
    same = group[:, None] == group[None, :]
    x = np.where(np.eye(len(group), dtype=bool), own, np.where(same, other, np.nan))
    return np.repeat(x[..., None], 3, axis=2)


def test_gain_and_pick_read_whether_the_own_actions_explain_the_frame():
    group = np.array([0, 0, 0, 1, 1])
    follows = scores(_nll(group, own=10.0, other=12.5), group)
    assert np.allclose(follows["head_gain"], 2.5) and np.allclose(follows["views_gain"], 5.0)
    assert (follows["wrist_pick"] == 1).all()
    blind = scores(_nll(group, own=10.0, other=10.0), group)  # the actions change nothing: ties shared
    assert np.allclose(blind["head_gain"], 0) and np.allclose(blind["views_pick"].ravel(), [1 / 3] * 3 + [1 / 2] * 2)
    wrong = scores(_nll(group, own=11.0, other=10.0), group)
    assert (wrong["reward_gain"] < 0).all() and (wrong["head_pick"] == 0).all()
    alone = scores(_nll(np.array([0, 1]), 1.0, 2.0), np.array([0, 1]))  # no sibling: not judged
    assert np.isnan(alone["head_gain"]).all()


def test_differing_codes_is_the_share_of_codes_siblings_do_not_share():
    codes = np.zeros((3, 2, 4), int)
    codes[1, 1, :2] = 1  # branch 1's wrist differs from its sibling's in 2 of 4 codes
    out = differing_codes(codes, np.array([0, 0, 1]), np.ones(3, bool))
    assert out == {"head": 0.0, "wrist": 0.5}


def test_pair_likelihoods_are_the_training_loss_of_each_pairing(tmp_path, tiny_world_model):
    sb = load_siblings(_branch_store(tmp_path / "s"), 0)
    nll, codes = pair_nll(tiny_world_model, sb, batch=5)
    same = sb.group[:, None] == sb.group[None, :]
    assert np.isfinite(nll[same]).all() and np.isnan(nll[~same]).all() and codes.shape[:2] == (6, 2)
    assert np.allclose(pair_nll(tiny_world_model, sb, batch=64)[0][same], nll[same], atol=1e-4)  # padding-blind
    # branch 4 under branch 3's actions, as the training loss scores that one sequence
    from transformers import AutoModelForCausalLM

    layout = TokenLayout.load(f"{tiny_world_model}/layout.json")
    tok = ImageTokenizer.load(f"{tiny_world_model}/tokenizer")
    model = AutoModelForCausalLM.from_pretrained(f"{tiny_world_model}/model")
    start = [tok.encode(sb.start[v][4:5])[0] for v in ("head", "wrist")]
    nxt = [tok.encode(sb.real[v][4:5, 0])[0] for v in ("head", "wrist")]
    ids, labels, seg = collate([layout.prompt(sb.instruction[4], *start, sb.actions[3, 0])],
                               [layout.target(*nxt, bool(sb.success[4, 0]), *start)], layout)
    with torch.no_grad():
        ref = segment_losses(model, ids, labels, seg, pad=layout.sp.pad, keep=layout.sp.keep)
    assert np.isclose(nll[4, 3, 0] / layout.codes_per_view, float(ref["head"]), atol=1e-4)
    assert np.isclose(nll[4, 3, 2], float(ref["reward"]), atol=1e-4)
    assert not np.isclose(nll[4, 3, 1], nll[4, 4, 1])  # other actions, another likelihood


def test_a_checkpoint_s_last_weights_are_judged_when_named(tmp_path, tiny_world_model):
    import shutil

    from safetensors.torch import load_file, save_file

    from benchmarks.action_likelihood import checkpoint_weights

    assert checkpoint_weights("a/wm:last") == ("a/wm", "last") and checkpoint_weights("a/wm") == ("a/wm", "best")
    wm = tmp_path / "wm"
    shutil.copytree(tiny_world_model, wm)
    (wm / "state").mkdir()
    weights = {k: v * 0.5 for k, v in load_file(wm / "model" / "model.safetensors").items()}
    save_file(weights, wm / "state" / "model.safetensors")  # other "last" weights than the served ones
    sb = load_siblings(_branch_store(tmp_path / "s"), 0)
    best, last = pair_nll(str(wm), sb)[0], pair_nll(f"{wm}:last", sb)[0]
    same = sb.group[:, None] == sb.group[None, :]
    assert not np.allclose(best[same], last[same]) and np.allclose(best[same], pair_nll(tiny_world_model, sb)[0][same])
