"""Does the world model rank the policy's own actions the way the real simulator does?

A group-relative objective learns only from the differences between the branches of one start state:
its gradient is sum_b A_b grad log pi(a_b), with A_b = R_b - mean of the group. What the world model
must get right is therefore not the success rate but the *order* of the branches inside a group. This
module judges that directly: the same action chunks of G branches per start state are scored by the
world model (under several reward definitions) and executed in real LIBERO; then, per definition,

* ``pair_accuracy``: over the pairs of branches of one group whose real outcomes differ, the share
  the imagined returns order the same way (ties count one half; 0.5 is chance);
* ``advantage_cosine``: the cosine between the imagined and the real group-relative advantages over
  all branches, the alignment of the two policy gradients if the branches' score vectors were
  orthogonal (0: the world model's signal is unrelated to the real one);
* both with a bootstrap interval over start states;
* ``noise_share``: of the within-group variance of a definition's returns, the share that comes from
  the world model's own sampling (the same actions imagined again with other seeds) rather than
  from the actions.

Returns: ``hard`` = gamma^j at the first step the answer passes 0.5 (what the loop trains on),
``soft`` = the expected discounted success when each step's P(yes) is read as the probability of
succeeding there given no success before; ``bootstrapped_returns`` adds gamma^n V(last observation)
where a branch did not succeed, as PPO's critic does (the real side reads V on the replay's views).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbpo_ray.seeds import derive_seed


def hard_returns(p_yes: np.ndarray, gamma: float) -> np.ndarray:
    """(B, n) P(yes) per step -> (B,) gamma^j at the first step with P(yes) > 0.5, else 0."""
    hit = p_yes > 0.5
    first = np.where(hit.any(1), hit.argmax(1), -1)
    return np.where(first >= 0, gamma ** np.maximum(first, 0), 0.0)


def soft_returns(p_yes: np.ndarray, gamma: float) -> np.ndarray:
    """(B, n) P(yes) per step -> (B,) sum_j gamma^j p_j prod_{k<j} (1 - p_k)."""
    p = np.clip(np.asarray(p_yes, np.float64), 0.0, 1.0)
    survive = np.cumprod(np.concatenate([np.ones((len(p), 1)), 1.0 - p[:, :-1]], axis=1), axis=1)
    return (p * survive * gamma ** np.arange(p.shape[1])[None]).sum(1)


def bootstrapped_returns(p_yes: np.ndarray, v_last: np.ndarray, gamma: float, soft: bool = False) -> np.ndarray:
    """What PPO's critic bootstrap makes of a branch: (B, n) P(yes) per step (or real success as 0/1)
    and (B,) V(the branch's last observation) -> (B,) the discounted success within the branch, plus
    gamma^n V(last) where it did not succeed (``soft``: weighted by the chance of no success)."""
    n = p_yes.shape[1]
    v_last = np.asarray(v_last, np.float64)
    if soft:
        p = np.clip(np.asarray(p_yes, np.float64), 0.0, 1.0)
        return soft_returns(p, gamma) + gamma**n * np.prod(1.0 - p, axis=1) * v_last
    return np.where((p_yes > 0.5).any(1), hard_returns(p_yes, gamma), gamma**n * v_last)


def real_returns(success: np.ndarray, gamma: float) -> np.ndarray:
    """(B, n) real success reached by the end of step j -> (B,) gamma^j at the first one, else 0."""
    return hard_returns(success.astype(np.float64), gamma)


def _pair_counts(imagined: np.ndarray, real: np.ndarray) -> tuple[float, int]:
    """Within one group: (agreeing pairs, ties counting 1/2; pairs whose real outcomes differ)."""
    i, j = np.triu_indices(len(real), 1)
    differ = real[i] != real[j]
    sign_real = np.sign(real[i] - real[j])[differ]
    sign_im = np.sign(imagined[i] - imagined[j])[differ]
    return float((sign_real == sign_im).sum() + 0.5 * (sign_im == 0).sum()), int(differ.sum())


def _per_group(imagined: np.ndarray, real: np.ndarray, group: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(G, 5) per group: agreeing pairs, differing pairs, A_im . A_real, |A_im|^2, |A_real|^2."""
    rows = []
    for g in groups:
        k = group == g
        a_im, a_real = imagined[k] - imagined[k].mean(), real[k] - real[k].mean()
        rows.append([*_pair_counts(imagined[k], real[k]), a_im @ a_real, a_im @ a_im, a_real @ a_real])
    return np.asarray(rows, np.float64)


def _score(parts: np.ndarray) -> tuple[float, float]:
    """(pair accuracy, advantage cosine) of a multiset of groups' rows of :func:`_per_group`."""
    agree, total, dot, n_im, n_real = parts.sum(0)
    norm = np.sqrt(n_im * n_real)
    return (agree / total if total else float("nan")), (float(dot / norm) if norm > 0 else 0.0)


def fidelity(imagined: np.ndarray, real: np.ndarray, group: np.ndarray, boot: int = 1000, seed: int = 0) -> dict:
    """How imagined returns (B,) order the branches of each group against the real returns (B,); the
    intervals resample start states (groups) with replacement."""
    imagined, real = np.asarray(imagined, np.float64), np.asarray(real, np.float64)
    groups = np.unique(group)
    parts = _per_group(imagined, real, group, groups)
    acc, cos = _score(parts)
    rng = np.random.default_rng(seed)
    draws = np.array([_score(parts[rng.integers(0, len(groups), len(groups))]) for _ in range(boot)])
    lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return {"groups": int(len(groups)), "groups_real_spread": int((parts[:, 4] > 0).sum()),
            "groups_imagined_spread": int((parts[:, 3] > 1e-12).sum()), "pairs": int(parts[:, 1].sum()),
            "pair_accuracy": round(acc, 4), "pair_accuracy_ci95": [round(float(lo[0]), 4), round(float(hi[0]), 4)],
            "advantage_cosine": round(cos, 4), "advantage_cosine_ci95": [round(float(lo[1]), 4), round(float(hi[1]), 4)],
            "imagined_return_mean": round(float(imagined.mean()), 4), "real_return_mean": round(float(real.mean()), 4)}


def noise_share(samples: np.ndarray, group: np.ndarray) -> float:
    """``samples`` (K, B): a return definition under K world-model draws of the same actions. The
    share of the within-group variance of one draw that the draws' own spread accounts for (1: the
    group's differences are the model's sampling alone; estimates may pass 1 slightly by chance)."""
    within_draws = samples.var(0, ddof=1).mean() if len(samples) > 1 else 0.0
    total = np.mean([samples[:, group == g].var() for g in np.unique(group)])
    return float(within_draws / total) if total > 0 else float("nan")


@dataclass
class OpenLoop:
    """P(yes) per step of a set of action chunks imagined open loop (every step taken)."""

    p_yes: np.ndarray  # (B, n) the answer token's
    p_yes_frames: np.ndarray | None  # (B, n) the frame reward's on the imagined views, where loaded
    uncertainty: np.ndarray  # (B, n)
    head: np.ndarray | None = None  # (B, n, S, S, 3) the imagined views after each step, when kept
    wrist: np.ndarray | None = None


def open_loop(world_model, head: np.ndarray, wrist: np.ndarray, instructions: list[str], actions: np.ndarray,
              temperature: float, seed: int, keep_frames: bool = False) -> OpenLoop:
    """Imagine every step of ``actions`` (B, n, H, 7) from real frames, whatever the answers say;
    ``keep_frames``: also return the imagined views (at the tokenizer's size)."""
    b, n = actions.shape[:2]
    head_codes, wrist_codes, head_img, wrist_img = world_model.start(head, wrist)
    p, unc = np.zeros((b, n)), np.zeros((b, n))
    pf = None if world_model.frame_reward is None else np.zeros((b, n))
    views: list[tuple[np.ndarray, np.ndarray]] = []
    for j in range(n):
        r = world_model.imagine_step(instructions, head_codes, wrist_codes, list(actions[:, j]), temperature=temperature,
                                     seed=derive_seed(seed, j + 1), head_frames=head_img, wrist_frames=wrist_img)
        p[:, j], unc[:, j] = r.p_yes_token, r.uncertainty
        if pf is not None:
            pf[:, j] = r.p_yes_frames
        head_codes, wrist_codes, head_img, wrist_img = r.head, r.wrist, r.head_frames, r.wrist_frames
        if keep_frames:
            views.append((head_img, wrist_img))
    if not keep_frames:
        return OpenLoop(p, pf, unc)
    return OpenLoop(p, pf, unc, np.stack([v[0] for v in views], 1), np.stack([v[1] for v in views], 1))
