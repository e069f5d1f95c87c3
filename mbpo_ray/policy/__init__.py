"""VLA policies behind one interface, picked by name from a registry.

``POLICIES`` maps an architecture name (``policy.arch``) to ``"module:Class"``, imported lazily.
The default ``binned_vla`` is a small CPU-trainable VLA (:mod:`mbpo_ray.policy.binned_vla`).
``pretrained_vla`` puts the same parallel action head on a pretrained transformers VLM read from a
local folder, ``policy.backbone_path``, with LoRA (:mod:`mbpo_ray.policy.pretrained_vla`).

Adapter contract for another VLA (e.g. a Hugging Face checkpoint with a larger backbone):

* subclass :class:`~mbpo_ray.policy.base.Policy`; ``__init__(cfg: PolicyConfig, bins: ActionBins)``;
* either implement ``logits_and_value(obs) -> ((B, H, 7, n_bins) logits, (B,) value)`` and inherit
  ``act``/``evaluate``, or override ``act(obs, greedy, generator) -> ActOutput`` and
  ``evaluate(obs, actions, mask) -> (log_prob, entropy, value)`` (per chunk, summed over its parts,
  with gradients) directly;
* take :class:`~mbpo_ray.policy.base.Observations` (uint8 upright head and wrist frames of any size,
  instructions as strings, 8-dim proprio) and do its own preprocessing (resize, tokenise);
* keep every tensor it needs at load time in ``state_dict()`` (buffers for statistics), so
  :func:`save_policy`/:func:`load_policy` round-trip it: ``policy.json`` + ``model.safetensors``;
  what it rebuilds from elsewhere at load time (a pretrained backbone's folder) is named by a
  ``PolicyConfig`` field, as ``policy.backbone_path``;
* name its critic ``value_head`` (the learner gives it the critic's learning rate) and, for FSDP,
  optionally list its transformer blocks in ``fsdp_units()``;
* add its name to ``POLICIES`` and to ``POLICY_ARCHS`` in :mod:`mbpo_ray.config`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from mbpo_ray.config import PolicyConfig
from mbpo_ray.policy.base import ActionBins, ActOutput, Observations, Policy

POLICIES = {
    "binned_vla": "mbpo_ray.policy.binned_vla:BinnedVLA",
    "pretrained_vla": "mbpo_ray.policy.pretrained_vla:PretrainedVLA",
}
WEIGHTS = "model.safetensors"
META = "policy.json"
CODEC = "codec"  # the frame codec's tokenizer folder, when the policy has one


def policy_class(arch: str) -> type[Policy]:
    if arch not in POLICIES:
        raise ValueError(f"policy.arch={arch!r} is not allowed: choose one of {', '.join(POLICIES)}")
    module, name = POLICIES[arch].split(":")
    return getattr(importlib.import_module(module), name)


def build_policy(cfg: PolicyConfig, bins: ActionBins) -> Policy:
    return policy_class(cfg.arch)(cfg, bins)


def save_policy(policy: Policy, path: str | Path, extra: dict | None = None,
                state: dict | None = None) -> None:
    """``path/model.safetensors`` + ``path/policy.json`` (config, bins, and ``extra`` such as the demos);
    ``state`` instead of the policy's own state dict (a sharded learner's gathered weights)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in (policy.state_dict() if state is None else state).items()}
    save_file(state, str(path / WEIGHTS))
    meta = {"policy": policy.cfg.__dict__, "bins": policy.bins.to_dict(), **(extra or {})}
    if policy.frame_codec is not None:
        policy.frame_codec.save(path / CODEC)
        meta["frame_codec"] = CODEC
    (path / META).write_text(json.dumps(meta, indent=1))


def read_policy_meta(path: str | Path) -> dict:
    meta = Path(path) / META
    if not meta.is_file() or not (Path(path) / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a policy checkpoint (needs {META} and {WEIGHTS}); "
                                "make one with `mbpo-ray sft STORE --out DIR`")
    return json.loads(meta.read_text())


def load_policy(path: str | Path, device: str = "cpu") -> Policy:
    """The policy saved in ``path``, in eval mode."""
    from safetensors.torch import load_file

    meta = read_policy_meta(path)
    policy = build_policy(PolicyConfig(**meta["policy"]), ActionBins.from_dict(meta["bins"]))
    policy.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
    if meta.get("frame_codec"):
        policy.frame_codec = load_frame_codec(Path(path) / meta["frame_codec"])
    return policy.to(device).eval()


def load_frame_codec(tokenizer_dir: str | Path):
    from mbpo_ray.world_model.tokenizer import ImageTokenizer

    if not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer_dir} is not a tokenizer folder (no tokenizer.json); make one with "
                                "`mbpo-ray train-tokenizer`, or pass a world model's tokenizer/")
    return ImageTokenizer.load(tokenizer_dir)


def with_frame_codec(policy_dir: str | Path, tokenizer_dir: str | Path, out: str | Path) -> str:
    """A copy of the checkpoint whose every input frame round-trips through ``tokenizer_dir``."""
    meta = read_policy_meta(policy_dir)
    policy = load_policy(policy_dir)
    policy.frame_codec = load_frame_codec(tokenizer_dir)
    save_policy(policy, out, {k: v for k, v in meta.items() if k not in ("policy", "bins", "frame_codec")})
    return str(out)


__all__ = ["POLICIES", "ActOutput", "ActionBins", "Observations", "Policy", "build_policy", "load_frame_codec",
           "load_policy", "policy_class", "read_policy_meta", "save_policy", "with_frame_codec"]
