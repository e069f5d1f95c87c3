"""Imagined branches replayed in the real simulator: does the world model answer the policy's own
actions truthfully?

Every branch starts from a stored real observation whose simulator state was recorded. Its imagined
action chunks (the policy's own, sampled in imagination) are executed open loop in LIBERO from that
state, and after each chunk the real outcome (success reached by then) and the real head and wrist
views are kept. Step by step they are compared with what the world model imagined: its answer (the
one that decided the reward, and the frame reward's where it was loaded) and its frames. Unlike the
held-out report, this judges imagination where MBPO uses it: on the policy's actions, compounding
over the branch's imagined steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mbpo_ray.config import EnvConfig
from mbpo_ray.rl.imagine import Branches
from mbpo_ray.world_model.counterfactual import reward_stats
from mbpo_ray.world_model.evaluate import f1
from mbpo_ray.world_model.tokenizer import psnr, resize_frames


@dataclass
class RealReplay:
    """The real outcome of a set of branches, step by step (only valid steps are filled)."""

    success: np.ndarray  # (B, n) bool: the env's success reached by the end of step j
    head: np.ndarray  # (B, n, S, S, 3) the real views after step j
    wrist: np.ndarray


def replay_part(env_cfg: EnvConfig, suite: str, task: int, sim_states: list[np.ndarray], actions: np.ndarray,
                valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Branches of one task executed open loop from their simulator states: (success, head, wrist),
    shaped (b, n), (b, n, S, S, 3), (b, n, S, S, 3)."""
    from mbpo_ray.envs.libero_env import LiberoEnv

    b, n = valid.shape
    s = env_cfg.image_size
    success, head, wrist = np.zeros((b, n), bool), np.zeros((b, n, s, s, 3), np.uint8), np.zeros((b, n, s, s, 3), np.uint8)
    with LiberoEnv(dataclasses.replace(env_cfg, suite=suite, task_id=task)) as env:
        for i in range(b):
            env.restore(sim_states[i], render=False)
            for j in np.flatnonzero(valid[i]):
                r = env.step_chunk(actions[i, j])
                success[i, j], head[i, j], wrist[i, j] = r.success, r.obs.head, r.obs.wrist
                if r.done:
                    break
    return success, head, wrist


def replay_branches(env_cfg: EnvConfig, tasks: list[tuple[str, int]], sim_states: list[np.ndarray], br: Branches,
                    progress: bool = True, workers: int = 1, part_size: int = 16) -> RealReplay:
    """Execute branch i's valid chunks from ``sim_states[i]`` in task ``tasks[i]`` (suite, task id),
    in parts of up to ``part_size`` branches of one task, over ``workers`` processes (spawned: each
    opens its own simulator)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    b, n = br.valid.shape
    s = env_cfg.image_size
    out = RealReplay(np.zeros((b, n), bool), np.zeros((b, n, s, s, 3), np.uint8), np.zeros((b, n, s, s, 3), np.uint8))
    parts = []
    for key in sorted(set(tasks)):
        mine = [i for i, t in enumerate(tasks) if t == key]
        parts += [(key, np.array(mine[k:k + part_size])) for k in range(0, len(mine), part_size)]

    def args(key, idx):
        return env_cfg, key[0], key[1], [sim_states[i] for i in idx], br.actions[idx], br.valid[idx]

    bar = tqdm(total=b, desc="replay branches in LIBERO", unit="branch", disable=not progress, dynamic_ncols=True)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    try:
        if pool:
            futures = [pool.submit(replay_part, *args(key, idx)) for key, idx in parts]
            results = (f.result() for f in futures)
        else:
            results = (replay_part(*args(key, idx)) for key, idx in parts)
        for (_, idx), got in zip(parts, results, strict=True):
            out.success[idx], out.head[idx], out.wrist[idx] = got
            bar.update(len(idx))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
    return out


def imagined_after(view: np.ndarray, final: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, n, S, S, 3): the imagined view after step j: what step j + 1 acted on, or, after a branch's
    last step, its final observation."""
    nxt = np.concatenate([view[:, 1:], final[:, None]], axis=1)
    later = np.concatenate([valid[:, 1:], np.zeros((len(valid), 1), bool)], axis=1)
    return np.where(later[..., None, None, None], nxt, final[:, None])


def grounding_report(br: Branches, real: RealReplay, size: int) -> dict:
    """Imagined vs real, per step (answers and frames) and per branch (success)."""
    valid = br.valid
    truth = real.success[valid]
    nxt_head, nxt_wrist = imagined_after(br.head, br.final_head, valid), imagined_after(br.wrist, br.final_wrist, valid)
    steps = {"decided": reward_stats(br.p_yes[valid], truth)}
    frames = br.p_yes_frames[valid]
    if np.isfinite(frames).all() and len(frames):
        steps["frame_reward"] = reward_stats(frames, truth)
    views = {}
    for view, imagined, actual in (("head", nxt_head, real.head), ("wrist", nxt_wrist, real.wrist)):
        act = resize_frames(actual[valid], size)
        views[view] = {"psnr": float(psnr(imagined[valid], act).mean()),
                       "psnr_by_step": [float(psnr(imagined[:, j][valid[:, j]], resize_frames(actual[:, j][valid[:, j]], size)).mean())
                                        for j in range(valid.shape[1]) if valid[:, j].any()]}
    imagined_ok, real_ok = br.terminal.any(1), (real.success & valid).any(1)
    return {"branches": int(len(br)), "steps": int(valid.sum()), "per_step": steps, "views": views,
            "per_branch": {"imagined_success": float(imagined_ok.mean()), "real_success": float(real_ok.mean()),
                           "agreement": float((imagined_ok == real_ok).mean()),
                           "both": int((imagined_ok & real_ok).sum()), "only_imagined": int((imagined_ok & ~real_ok).sum()),
                           "only_real": int((~imagined_ok & real_ok).sum()), "f1": f1(imagined_ok, real_ok)}}
