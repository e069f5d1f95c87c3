"""Does the world model answer the policy's actions truthfully? Counterfactual checks on held-out data.

* reward under changed actions, frames unchanged (accuracy and F1 of P(yes) > 0.5 against the
  recorded outcome):
  - ``recorded``: the chunks as executed;
  - ``policy_tail``: the second half of every chunk replaced by the actions the policy samples at
    that state (the chunk's effect on the outcome is mostly decided by then; a model that reads the
    answer from the frames keeps it, one that keys on particular action tokens does not);
  - ``padded_nonfinal``: every chunk that did not succeed cut at a random step and padded by
    repeating its last action, as success chunks were padded before chunks ran to their end; a
    model that learned "a repeated tail means yes" answers yes to them;
* action sensitivity: PSNR of the imagined next head and wrist views against the real ones under
  the recorded chunk vs under a chunk taken from another time step of the same episode (a model
  that ignores actions scores the same under both);
* ``uncertainty_error_corr``: how well the engine's per-transition uncertainty (mean surprisal of the
  generated codes) tracks the transition's frame error;
* ``by_source``: the one-step report (PSNR per view, reward, the counterfactuals, action
  sensitivity) on demonstrations and on policy rollouts separately: MBPO needs accuracy on the policy's states, not the expert's.

Every check runs at the given sampling temperature (greedy = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mbpo_ray.policy.base import Observations
from mbpo_ray.world_model.data import Episodes
from mbpo_ray.world_model.evaluate import f1, ssim
from mbpo_ray.world_model.tokenizer import paste_kept, psnr, resize_frames

# the report's names of the store's episode sources (sibling branches, `mbpo-ray branches`, apart)
REPORT_SOURCES = (("demo", "demo"), ("policy", "real"), ("branch", "branch"))


def reward_stats(p_yes: np.ndarray, truth: np.ndarray) -> dict:
    pred = p_yes > 0.5
    return {"accuracy": float((pred == truth).mean()), "majority_baseline": float(max(truth.mean(), 1 - truth.mean())),
            "f1": f1(pred, truth), "positives": int(truth.sum()), "predicted_yes": int(pred.sum()),
            "transitions": int(len(truth))}


@dataclass
class ImaginedRows:
    """Imagined next views (decoded), P(yes) from the answer token and from the frames, uncertainty."""

    head: np.ndarray
    wrist: np.ndarray
    p_yes: np.ndarray
    uncertainty: np.ndarray
    p_frames: np.ndarray | None  # the frame reward on the imagined views (None: the checkpoint has none)


def imagine_rows(wm, ep: Episodes, rows: np.ndarray, actions: list[np.ndarray], temperature: float, seed: int,
                 batch: int = 64) -> ImaginedRows:
    """The imagined transitions of ``rows`` under ``actions``."""
    head_codes, wrist_codes, head, wrist = wm.start(ep.head[rows], ep.wrist[rows])
    heads, wrists, p_yes, unc, p_frames = [], [], [], [], []
    for i in range(0, len(rows), batch):
        sl = slice(i, i + batch)
        r = wm.imagine_step([ep.instruction[ep.row_episode[k]] for k in rows[sl]], head_codes[sl], wrist_codes[sl],
                            actions[sl], temperature=temperature, seed=seed + i, head_frames=head[sl],
                            wrist_frames=wrist[sl])
        heads.append(r.head_frames)
        wrists.append(r.wrist_frames)
        p_yes.append(r.p_yes if r.p_yes_token is None else r.p_yes_token)
        unc.append(r.uncertainty)
        p_frames.append(r.p_yes_frames)
    frames = None if any(p is None for p in p_frames) else np.concatenate(p_frames)
    return ImaginedRows(np.concatenate(heads), np.concatenate(wrists), np.concatenate(p_yes), np.concatenate(unc), frames)


def uncertainty_error_corr(ep: Episodes, rows: np.ndarray, head: np.ndarray, wrist: np.ndarray,
                           uncertainty: np.ndarray, size: int) -> float:
    """Pearson correlation of each transition's uncertainty with its frame error (the mean squared
    error of the imagined head and wrist views against the real ones)."""
    err = np.zeros(len(rows))
    for view, img in (("head", head), ("wrist", wrist)):
        real = resize_frames(getattr(ep, view), size)[rows + 1].astype(np.float64)
        err += ((img.astype(np.float64) - real) ** 2).reshape(len(rows), -1).mean(1) / 2
    ok = np.isfinite(uncertainty)
    if ok.sum() < 3 or np.std(uncertainty[ok]) == 0 or np.std(err[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(uncertainty[ok], err[ok])[0, 1])


def view_stats(ep: Episodes, rows: np.ndarray, head: np.ndarray, wrist: np.ndarray, size: int,
               recon: dict[str, np.ndarray] | None = None) -> dict:
    """PSNR and SSIM per view against the real next frames, next to copying the current frame. With
    ``recon`` (``round_trip``: every frame of ``ep`` through the tokenizer, and its codes) also the three
    bounds of the world model's own output space: ``psnr_copy_codes``, the current frame's codes kept
    everywhere (all ``<keep>``), ``psnr_codes_ceiling``, the real next frame's codes, and
    ``psnr_codes_ceiling_kept``, those codes rendered with the current pixels in the unchanged patches
    (``keep_pixels``; all kept there is the copy baseline itself)."""
    out = {}
    for view, img in (("head", head), ("wrist", wrist)):
        real = resize_frames(getattr(ep, view), size)
        nxt, cur = real[rows + 1], real[rows]
        out[view] = {"psnr": float(psnr(img, nxt).mean()), "psnr_copy_baseline": float(psnr(cur, nxt).mean()),
                     "ssim": float(ssim(img, nxt).mean()), "ssim_copy_baseline": float(ssim(cur, nxt).mean())}
        if recon is not None:
            codes = recon[f"{view}_codes"]
            kept = paste_kept(recon[view][rows + 1], cur, codes[rows + 1], codes[rows])
            out[view].update(psnr_copy_codes=float(psnr(recon[view][rows], nxt).mean()),
                             psnr_codes_ceiling=float(psnr(recon[view][rows + 1], nxt).mean()),
                             psnr_codes_ceiling_kept=float(psnr(kept, nxt).mean()))
    return out


def action_sensitivity(recorded: dict, ep: Episodes, rows: np.ndarray, other: ImaginedRows, sel: np.ndarray,
                       size: int) -> dict:
    """PSNR per view of the imagined next frames under the recorded chunk (``recorded``: their
    :func:`view_stats`, already computed) and under another time step's chunk, on the selected
    ``rows`` (``sel`` picks them out of ``other``'s arrays)."""
    theirs = view_stats(ep, rows, other.head[sel], other.wrist[sel], size)
    return {v: {"psnr_recorded": recorded[v]["psnr"], "psnr_other": theirs[v]["psnr"]} for v in ("head", "wrist")}


def round_trip(wm, ep: Episodes) -> dict[str, np.ndarray]:
    """Every frame of ``ep`` as the world model's tokenizer renders it (``head``, ``wrist``) and its
    codes (``head_codes``, ``wrist_codes``)."""
    out = {}
    for view in ("head", "wrist"):
        out[f"{view}_codes"] = wm.tokenizer.encode(getattr(ep, view))
        out[view] = wm.tokenizer.decode(out[f"{view}_codes"])
    return out


def policy_tails(policy, ep: Episodes, rows: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each recorded chunk with its second half replaced by the policy's sampled actions at that state."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(rows), 64):
        r = rows[i : i + 64]
        obs = Observations(ep.head[r], ep.wrist[r], np.zeros((len(r), 8), np.float32),
                           [ep.instruction[ep.row_episode[k]] for k in r])
        with torch.no_grad():
            sampled = policy.act(obs, greedy=False, generator=gen).actions.numpy()
        for k, s in zip(r, sampled, strict=True):
            a = ep.actions[k].copy()
            a[len(a) // 2 :] = s[len(a) // 2 :]
            out.append(a)
    return out


def padded_nonfinal(ep: Episodes, rows: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Chunks that did not succeed cut at a random step and padded with their last action; success
    chunks as recorded."""
    out = []
    for k in rows:
        a = ep.actions[k].copy()
        if not ep.success[k]:
            cut = int(rng.integers(1, len(a)))
            a[cut:] = a[cut - 1]
        out.append(a)
    return out


def other_time_step(ep: Episodes, rows: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each row, the chunk of another row of the same episode (another episode's if it has one row)."""
    out = []
    for k in rows:
        same = rows[(ep.row_episode[rows] == ep.row_episode[k]) & (rows != k)]
        pool = same if len(same) else rows[rows != k]
        out.append(ep.actions[int(rng.choice(pool))].copy())
    return out


def counterfactual_report(wm, ep: Episodes, sources: list[str], policy=None, temperature: float = 0.0,
                          seed: int = 0) -> dict:
    """The checks above on every full-chunk transition of ``ep``; ``sources[i]`` is episode i's source.
    With a frame reward loaded (``wm.frame_reward``) its answers get the same checks (``frame_reward``)."""
    rows = ep.transitions()
    size = wm.tokenizer.preset.image_size
    truth = ep.success[rows]
    rng = np.random.default_rng(seed)
    rec = imagine_rows(wm, ep, rows, [ep.actions[k] for k in rows], temperature, seed)
    recon = round_trip(wm, ep)
    report = {"temperature": temperature, **view_stats(ep, rows, rec.head, rec.wrist, size, recon),
              "reward": reward_stats(rec.p_yes, truth),
              "uncertainty_error_corr": uncertainty_error_corr(ep, rows, rec.head, rec.wrist, rec.uncertainty, size),
              "uncertainty_mean": float(np.nanmean(rec.uncertainty)) if np.isfinite(rec.uncertainty).any() else float("nan")}
    changed = {"recorded": rec}
    if policy is not None:
        changed["policy_tail"] = imagine_rows(wm, ep, rows, policy_tails(policy, ep, rows, seed), temperature, seed)
    changed["padded_nonfinal"] = imagine_rows(wm, ep, rows, padded_nonfinal(ep, rows, rng), temperature, seed)
    report["counterfactual"] = {k: reward_stats(v.p_yes, truth) for k, v in changed.items()}
    other = imagine_rows(wm, ep, rows, other_time_step(ep, rows, rng), temperature, seed)
    report["action_sensitivity"] = action_sensitivity(report, ep, rows, other, np.ones(len(rows), bool), size)
    src = np.array([sources[ep.row_episode[k]] for k in rows])
    selections = {name: src == key for name, key in REPORT_SOURCES if (src == key).any()}
    report["by_source"] = {}
    for name, sel in selections.items():
        stats = view_stats(ep, rows[sel], rec.head[sel], rec.wrist[sel], size, recon)
        report["by_source"][name] = {
            **stats, "reward": reward_stats(rec.p_yes[sel], truth[sel]),
            "counterfactual": {k: reward_stats(v.p_yes[sel], truth[sel]) for k, v in changed.items()},
            "action_sensitivity": action_sensitivity(stats, ep, rows[sel], other, sel, size)}
    if rec.p_frames is not None:
        report["frame_reward"] = frame_reward_report(wm, ep, rows, changed, selections, recon)
    return report


def frame_reward_report(wm, ep: Episodes, rows: np.ndarray, changed: dict[str, ImaginedRows],
                        selections: dict[str, np.ndarray], recon: dict[str, np.ndarray]) -> dict:
    """The frame reward's answers on the imagined views under each action change, by source, and on
    the real next views as the tokenizer renders them (``recon``): the best it can do with perfect frames."""
    truth = ep.success[rows]
    p_real = wm.frame_reward.p_success(recon["head"][rows + 1], recon["wrist"][rows + 1])
    p_rec = changed["recorded"].p_frames
    return {"counterfactual": {k: reward_stats(v.p_frames, truth) for k, v in changed.items()},
            "by_source": {name: {"reward": reward_stats(p_rec[sel], truth[sel]),
                                 "counterfactual": {k: reward_stats(v.p_frames[sel], truth[sel]) for k, v in changed.items()},
                                 "real_frames": reward_stats(p_real[sel], truth[sel])} for name, sel in selections.items()},
            "real_frames": reward_stats(p_real, truth)}
