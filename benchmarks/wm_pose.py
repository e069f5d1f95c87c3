"""Does decoding the robot's next pose before the frames make the world model follow the actions?

    python benchmarks/wm_pose.py --world-model CKPT --store STORE --siblings SIB_STORE --branches-seed 4 [5 ...]
        [--exclude-seed 0 [1 ...]] [--size base] [--steps 800] [--batch 32] [--minutes 45] [--name wm_pose]

Trained on sibling branches, the world model tells apart the action chunks of start states it saw and
not those of new ones: the mapping from 70 action bins to where the arm appears after the chunk does
not generalise from a few thousand transitions. The robot's pose (end-effector position, axis-angle
and fingers: the store's ``proprio``) is almost a sum of the actions (the controller moves the
end effector by each action's delta), and where the arm appears in both views is a fixed function
of the pose. A layout that writes the current pose into the prompt and generates the next pose
first (8 bins, before the head view, as the head view comes before the wrist view) splits the hard
mapping into two easier ones.

Two world models of one size are trained from scratch on the same transitions of CKPT's split of
STORE (same initialisation, same batches, same steps; ``wm_scale.py``'s training): ``plain`` with
CKPT's layout, ``pose`` with the pose written in. Both are judged on the held-out sibling pairs of
SIB_STORE as ``action_likelihood.py`` judges (branch i's real next frame, teacher-forced, given the
start and branch j's actions; gain and pick of the own actions), the pose model twice:

* ``pose_greedy``: the next pose the model itself generates (greedy) for actions j, then the real
  frame's codes given it: what imagination would do;
* ``pose_real``: the real next pose of branch j (a perfect pose predictor): what the frames gain
  from the pose alone.

Beside them, how far the generated pose lies from the real one (end-effector position, cm) and how
far siblings' real poses lie apart. Writes benchmarks/results/NAME.json (after each model) and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.action_likelihood import pair_matrix, pair_sequences, report, scores, sequence_nll  # noqa: E402
from benchmarks.action_likelihood import plot as likelihood_plot  # noqa: E402
from benchmarks.common import no_home, provenance, write_result  # noqa: E402
from benchmarks.sibling_fidelity import compare, load_siblings  # noqa: E402
from benchmarks.wm_scale import SIZES, per_code, train_size  # noqa: E402
from mbpo_ray.world_model.layout import TokenLayout, _bins, _ranges  # noqa: E402


@dataclass(frozen=True)
class PoseLayout(TokenLayout):
    """CKPT's layout with the robot's pose written in: ``... <wrist> w_t pose_t <act> a.. |
    pose_t+H <head> h_t+H <wrist> w_t+H <rew> answer <eos>`` (``|``: where the prompt ends). The pose
    bins share the action bins' ids (their position says which dimension), on ranges fitted per
    dimension to the training poses."""

    pose_low: tuple[float, ...] = ()
    pose_high: tuple[float, ...] = ()

    @property
    def pose_dim(self) -> int:
        return len(self.pose_low)

    def max_len(self, max_words: int = 32) -> int:
        return super().max_len(max_words) + 2 * self.pose_dim

    def segments(self) -> dict[str, slice]:
        d = self.pose_dim + 1  # the next pose and the <head> that follows it
        return {k: slice(s.start + d, s.stop + d) for k, s in super().segments().items()}

    def pose_ids(self, pose: np.ndarray) -> list[int]:
        return (_bins(pose, self.pose_low, self.pose_high, self.n_bins) + self.bin_offset).tolist()

    def pose_of(self, ids) -> np.ndarray:
        lo, hi = np.asarray(self.pose_low), np.asarray(self.pose_high)
        return lo + (np.asarray(ids) - self.bin_offset + 0.5) / self.n_bins * (hi - lo)

    def with_pose(self, prompt: list[int], pose: np.ndarray) -> list[int]:
        """A plain layout's prompt with the current pose before ``<act>``, its closing ``<head>`` dropped."""
        act = len(prompt) - 2 - self.action_tokens
        return prompt[:act] + self.pose_ids(pose) + prompt[act:-1]

    def target_with_pose(self, target: list[int], pose_ids: list[int]) -> list[int]:
        return list(pose_ids) + [self.sp.head] + list(target)


def episode_poses(store, episode_ids: list[str]) -> np.ndarray:
    """(R, 8) the pose of every row of these episodes, in ``load_episodes``' row order."""
    return np.concatenate([np.stack(store.read_episode(e, ["proprio"]).column("proprio").to_pylist())
                           for e in episode_ids]).astype(np.float32)


def transition_sets(ckpt, store, tok, layout) -> tuple[dict, dict, PoseLayout]:
    """Plain and pose (prompts, targets) of CKPT's training and held-out transitions, and the pose layout."""
    from mbpo_ray.world_model.data import load_episodes
    from mbpo_ray.world_model.train import TokenData

    split = json.loads((ckpt / "split.json").read_text())
    data = {}
    for name in ("train", "heldout"):
        td = TokenData(load_episodes(store, split[name]), tok, layout)
        data[name] = td, episode_poses(store, split[name])
        print(f"  {name}: {len(td.rows)} transitions of {len(split[name])} episodes", flush=True)
    td, poses = data["train"]
    lo, hi = _ranges(poses[np.concatenate([td.rows, td.rows + 1])].astype(np.float64))
    pl = PoseLayout(**{f.name: getattr(layout, f.name) for f in fields(layout)}, pose_low=lo, pose_high=hi)
    plain, pose = {}, {}
    for name, (td, poses) in data.items():
        plain[name] = td.prompts, td.targets
        pose[name] = ([pl.with_pose(p, poses[k]) for p, k in zip(td.prompts, td.rows, strict=True)],
                      [pl.target_with_pose(t, pl.pose_ids(poses[k + 1])) for t, k in zip(td.targets, td.rows, strict=True)])
    return plain, pose, pl


def greedy_pose(model, pl: PoseLayout, prompts: list[list[int]], batch: int = 64) -> list[list[int]]:
    """The next pose each prompt makes the model generate, bin by bin, greedily among the bin ids."""
    import torch

    device = next(model.parameters()).device
    out = []
    for k in range(0, len(prompts), batch):
        seqs = [list(p) for p in prompts[k:k + batch]]
        for _ in range(pl.pose_dim):
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pl.sp.pad, dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
            last = torch.tensor([len(s) - 1 for s in seqs])
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=(ids != pl.sp.pad).to(device)).logits
            row = logits[torch.arange(len(seqs)), last.to(device), pl.bin_offset:pl.bin_offset + pl.n_bins]
            for s, b in zip(seqs, row.argmax(-1).tolist(), strict=True):
                s.append(pl.bin_offset + b)
        out += [s[-pl.pose_dim:] for s in seqs]
    return out


def pair_sets(layout, pl: PoseLayout, tok, sb) -> dict:
    """The held-out sibling pairs: plain (prompts, targets), pose prompts, and which pair holds j's own actions."""
    prompts, targets, pairs, _ = pair_sequences(layout, tok, sb)
    pose_prompts = [pl.with_pose(p, sb.proprio[i, 0]) for p, (i, _) in zip(prompts, pairs, strict=True)]
    own = {j: k for k, (i, j) in enumerate(pairs) if i == j}  # one pose prompt per action chunk j
    return {"plain": (prompts, targets), "pose_prompts": pose_prompts, "pairs": pairs, "own": own}


def pose_error(pl: PoseLayout, gen: dict[int, list[int]], sb) -> dict:
    """Generated next end-effector position against the branch's own real one and its siblings' (cm)."""
    ok = np.flatnonzero(sb.valid[:, 0])
    pos = {j: pl.pose_of(gen[j])[:3] for j in ok}
    own = [100 * np.linalg.norm(pos[j] - sb.proprio[j, 1, :3]) for j in ok]
    sib = [100 * np.linalg.norm(sb.proprio[i, 1, :3] - sb.proprio[j, 1, :3]) for i in ok for j in ok
           if j > i and sb.group[i] == sb.group[j]]
    moved = [100 * np.linalg.norm(sb.proprio[j, 1, :3] - sb.proprio[j, 0, :3]) for j in ok]
    return {"generated_vs_own_cm": round(float(np.mean(own)), 3), "between_siblings_cm": round(float(np.mean(sib)), 3),
            "moved_in_chunk_cm": round(float(np.mean(moved)), 3)}


def judge_pairs(model, layout, prompts, targets, pairs, group, codes_per_view, boot, seed):
    nll = pair_matrix(sequence_nll(model, layout, prompts, targets), pairs, len(group))
    sc = scores(nll, group)
    return report(sc, group, codes_per_view, boot, seed), sc


def judge_model(name: str, model, lay, sets: dict, ps: dict, sb, args) -> tuple[dict, dict]:
    """One trained model's held-out and training cross-entropy and its action gain on the pairs; the
    pose model's under its generated and under the real next poses. Returns (row, per-branch scores)."""
    cpv, pairs, group = lay.codes_per_view, ps["pairs"], sb.group
    row = {"heldout": per_code(sequence_nll(model, lay, *sets["heldout"]), cpv),
           "train": per_code(sequence_nll(model, lay, sets["train"][0][:2000], sets["train"][1][:2000]), cpv)}
    if name == "plain":
        row["action"], sc = judge_pairs(model, lay, *ps["plain"], pairs, group, cpv, args.boot, args.seed)
        return row, {"plain": sc}
    js = sorted(ps["own"])
    gen = dict(zip(js, greedy_pose(model, lay, [ps["pose_prompts"][ps["own"][j]] for j in js]), strict=True))
    row["pose"] = pose_error(lay, gen, sb)
    out = {}
    for how, ids in (("greedy", lambda j: gen[j]), ("real", lambda j: lay.pose_ids(sb.proprio[j, 1]))):
        targets = [lay.target_with_pose(t, ids(j)) for t, (_, j) in zip(ps["plain"][1], pairs, strict=True)]
        row[f"action_{how}"], out[f"pose_{how}"] = judge_pairs(model, lay, ps["pose_prompts"], targets, pairs, group,
                                                               cpv, args.boot, args.seed)
    return row, out


def plot(name: str, rows: dict, chance: float) -> None:
    """``action_likelihood.py``'s bars: the plain model, the pose model under its own and the real next pose."""
    bars = {"plain": rows["plain"]["action"]} if "plain" in rows else {}
    if "pose" in rows:
        bars.update({"pose, its own next pose": rows["pose"]["action_greedy"],
                     "pose, the real next pose": rows["pose"]["action_real"]})
    likelihood_plot(name, bars, chance)


def run(args) -> None:
    import torch

    from mbpo_ray.replay import ReplayStore
    from mbpo_ray.world_model.tokenizer import ImageTokenizer

    prov, t0 = provenance(), time.time()
    ckpt = Path(os.path.expanduser(args.world_model))
    if not (ckpt / "split.json").is_file() or not (ckpt / "layout.json").is_file():
        raise SystemExit(f"--world-model {args.world_model}: no split.json and layout.json there "
                         "(a folder written by `mbpo-ray train-world-model`)")
    layout, tok = TokenLayout.load(ckpt / "layout.json"), ImageTokenizer.load(ckpt / "tokenizer")
    plain, pose, pl = transition_sets(ckpt, ReplayStore.open(os.path.expanduser(args.store)), tok, layout)
    sb = load_siblings(ReplayStore.open(os.path.expanduser(args.siblings)), args.branches_seed, args.exclude_seed)
    ps = pair_sets(layout, pl, tok, sb)
    ok = sb.valid[:, 0]
    chance = float(np.mean([1 / np.sum(ok & (sb.group == sb.group[i])) for i in np.flatnonzero(ok)]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {"world_model": no_home(str(ckpt)), "store": no_home(args.store), "siblings": no_home(args.siblings),
              "branches_seed": args.branches_seed, "exclude_seed": args.exclude_seed, "start_states": len(sb.start_ids),
              "branches": int(ok.sum()), "pairs": len(ps["pairs"]), "chance_pick": round(chance, 4),
              "transitions": {k: len(plain[k][0]) for k in ("train", "heldout")}, "size": args.size,
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "settings": {k: getattr(args, k) for k in ("steps", "minutes", "batch", "lr", "eval_every",
                                                         "reward_weight", "seed")},
              "pose_layout": {"pose_low": pl.pose_low, "pose_high": pl.pose_high}, "models": {},
              "png": f"benchmarks/results/{args.name}.png"}
    per_branch = {}
    for name, lay, sets in (("plain", layout, plain), ("pose", pl, pose)):
        model, info = train_size(args.size, sets, lay, args, device)
        row, sc = judge_model(name, model.eval(), lay, sets, ps, sb, args)
        result["models"][name] = {**info, **row}
        per_branch.update(sc)
        print(f"{name}: " + json.dumps({k: v for k, v in row.items() if k.startswith(("action", "pose"))})[:600], flush=True)
        result["seconds"] = round(time.time() - t0, 1)
        write_result(args.name, result, prov)  # after each model: an interrupted run keeps what it has
        del model
    for part in ("views_gain", "views_pick", "head_gain", "wrist_gain"):
        result[f"{part}_vs_plain"] = compare({k: v[part] for k, v in per_branch.items()}, "plain", sb.group,
                                             args.boot, args.seed)
    result["seconds"] = round(time.time() - t0, 1)
    write_result(args.name, result, prov)
    plot(args.name, result["models"], chance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-model", required=True, dest="world_model",
                    help="the checkpoint whose split, layout and tokenizer both models use")
    ap.add_argument("--store", required=True, help="the store CKPT was trained on")
    ap.add_argument("--siblings", required=True)
    ap.add_argument("--branches-seed", type=int, nargs="+", required=True, dest="branches_seed")
    ap.add_argument("--exclude-seed", type=int, nargs="+", dest="exclude_seed")
    ap.add_argument("--size", default="base", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--minutes", type=float, default=45.0, help="at most this long per model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=200, dest="eval_every")
    ap.add_argument("--reward-weight", type=float, default=20.0, dest="reward_weight")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="wm_pose")
    args = ap.parse_args()
    if args.steps < 1 or args.minutes <= 0 or args.batch < 1 or args.eval_every < 1:
        ap.error("--steps, --minutes, --batch and --eval-every must be positive")
    run(args)


if __name__ == "__main__":
    main()
