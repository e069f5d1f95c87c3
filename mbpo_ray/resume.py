"""What makes a run folder safe to continue: its own config, a checkpoint swap that a crash cannot
break, and logs that hold each iteration once.

``OUT/checkpoint`` is replaced in three renames (``checkpoint`` -> ``checkpoint.prev``,
``checkpoint.tmp`` -> ``checkpoint``, then ``checkpoint.prev`` deleted); ``checkpoint.tmp`` counts as
complete once its ``state.json`` exists (written last, atomically). :func:`recover_checkpoint` finishes
a swap that a crash interrupted, so at every moment one complete checkpoint can be found.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mbpo_ray.config import Config, build_config
from mbpo_ray.config_loader import load_yaml, merge

CHECKPOINT, TMP, PREV = "checkpoint", "checkpoint.tmp", "checkpoint.prev"


def _complete(path: Path) -> bool:
    return (path / "state.json").is_file()


def write_state(folder: Path, state: dict) -> None:
    """``state.json`` last and atomically: its presence marks the checkpoint folder complete."""
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / "state.json")


def swap_checkpoint(run: Path) -> None:
    """Make the complete ``checkpoint.tmp`` the checkpoint, never leaving the run without one."""
    cur, tmp, prev = run / CHECKPOINT, run / TMP, run / PREV
    if not _complete(tmp):
        raise RuntimeError(f"{tmp} is not a complete checkpoint (no state.json)")
    shutil.rmtree(prev, ignore_errors=True)
    if cur.exists():
        cur.rename(prev)
    tmp.rename(cur)
    shutil.rmtree(prev, ignore_errors=True)


def recover_checkpoint(run: Path) -> None:
    """Finish a checkpoint swap a crash interrupted: the newest complete checkpoint becomes
    ``checkpoint``; an incomplete ``checkpoint.tmp`` (crash while writing it) is dropped."""
    cur, tmp, prev = run / CHECKPOINT, run / TMP, run / PREV
    if not cur.exists():
        if _complete(tmp):  # crashed between the two renames (or before the first)
            tmp.rename(cur)
        elif _complete(prev):
            prev.rename(cur)
    if _complete(cur):
        for stale in (tmp, prev):
            shutil.rmtree(stale, ignore_errors=True)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def resume_config(run: Path, config_file: str | None, overrides: dict[str, Any]) -> tuple[Config, list[str]]:
    """The config ``run`` was started with (``run.json``), with a resume command's explicit settings
    (``--config`` file, then dotted flags) on top. Returns it and the ``field old -> new`` it changed."""
    path = run / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no run.json: it is not a run folder of `mbpo-ray train`")
    return config_on_top(json.loads(path.read_text())["config"], config_file, overrides)


def config_on_top(saved: dict[str, Any], config_file: str | None, overrides: dict[str, Any]) -> tuple[Config, list[str]]:
    """``saved`` (a config's sections as recorded by an earlier run) with explicit settings on top."""
    top = merge(load_yaml(config_file), overrides) if config_file else overrides
    cfg = build_config(None, merge(saved, top))
    before, after = _flat(saved), _flat(cfg.to_dict())
    changed = [f"{k} {before[k]!r} -> {v!r}" for k, v in after.items() if k in before and before[k] != v]
    return cfg, changed


def update_run_config(run: Path, cfg: Config) -> None:
    """Record the config a resume runs with, so the next resume starts from it."""
    path = run / "run.json"
    saved = json.loads(path.read_text())
    saved["config"] = cfg.to_dict()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(saved, indent=1))
    os.replace(tmp, path)


def trim_metrics(run: Path, iteration: int) -> int:
    """Drop ``metrics.jsonl`` rows past the checkpoint's ``iteration`` (a resumed run logs them again).
    Returns how many were dropped."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    rows = path.read_text().splitlines()
    keep = [r for r in rows if r.strip() and json.loads(r)["iteration"] <= iteration]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(r + "\n" for r in keep))
    os.replace(tmp, path)
    return len(rows) - len(keep)


def save_inflight(weights, folder: Path, state: dict) -> None:
    """Keep, in checkpoint ``folder``, the weights the batch in flight is imagined with where they are
    not the checkpoint's own (an overlapped batch was imagined before the last update or finetune), so
    a resumed run imagines that batch again on the same weights. Version 0 (a replica's starting
    weights) needs nothing kept."""
    held = state.get("imagine_versions")
    if not held:
        return
    for name, want, now in (("policy", held[0], state["version"]), ("world_model", held[1], state["world_model_version"])):
        if 0 < want != now:
            (folder / "inflight").mkdir(parents=True, exist_ok=True)
            (folder / "inflight" / f"{name}.safetensors").write_bytes(weights.read_bytes(name, want))


def republish(run: Path, weights, state: dict, publish_world_model=None) -> None:
    """On resume the checkpoint's weights become the newest versions again (the run may have published
    later ones before it stopped), the in-flight batch's own weights just before them; the state's
    version numbers (and the in-flight batch's) are renumbered to match. ``publish_world_model(v)``
    publishes the checkpoint's world model (None: the world model is not finetuned, stays version 0)."""
    ckpt, held = run / CHECKPOINT, state.get("imagine_versions")
    publishers = [("policy", "version", lambda v: weights.publish_bytes(
        "policy", (ckpt / "policy" / "model.safetensors").read_bytes(), v))]
    if publish_world_model is not None:
        publishers.append(("world_model", "world_model_version", publish_world_model))
    for k, (name, key, publish) in enumerate(publishers):
        kept = ckpt / "inflight" / f"{name}.safetensors"
        if held and kept.is_file():
            held[k] = weights.latest(name) + 1
            weights.publish_bytes(name, kept.read_bytes(), held[k])
        new = weights.latest(name) + 1
        publish(new)
        if held and held[k] == state[key]:
            held[k] = new
        state[key] = new
