"""World-model learner: finetunes the UMM on the replay store as real data arrives.

It holds the transformers model of a world-model checkpoint with its optimizer; ``finetune(steps)``
tokenises the episodes that reached the store since its last call (the checkpoint's held-out
episodes stay out; only token sequences are kept, not frames), runs
the same per-segment loss as ``train-world-model`` and publishes the new weights to the weight
store, from where every running engine pulls them in place (``WorldModelEngine.update_weights``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ray
import torch

from learners.weight_channel import ChannelSender
from mbpo_ray.replay import ReplayStore
from mbpo_ray.weights import WeightStore

WORLD_MODEL = "world_model"
LEARNER_STATE = "learner_state.pt"  # the optimizer state, next to the model in a run's checkpoint


class WorldModelLearner(ChannelSender):  # sends its versions with mbpo.weight_sync=broadcast
    def __init__(self, world_model_dir: str, store_uri: str, weights_uri: str, lr: float = 1e-4,
                 batch_size: int = 16, seed: int = 0):
        from transformers import AutoModelForCausalLM

        from mbpo_ray.world_model.layout import TokenLayout
        from mbpo_ray.world_model.tokenizer import ImageTokenizer

        path = Path(world_model_dir)
        self.layout = TokenLayout.load(path / "layout.json")
        self.tokenizer = ImageTokenizer.load(path / "tokenizer")
        self.heldout = set(json.loads((path / "split.json").read_text())["heldout"]) if (path / "split.json").exists() else set()
        self.model = AutoModelForCausalLM.from_pretrained(path / "model").train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
        if (path / LEARNER_STATE).is_file():  # a checkpoint of a run: continue its optimizer
            self.opt.load_state_dict(torch.load(path / LEARNER_STATE, weights_only=False))
        self.store = ReplayStore.open(store_uri)
        self.weights = WeightStore(weights_uri)
        self.batch_size = batch_size
        trained = path / "train_config.json"  # the checkpoint's own loss weighting, kept when finetuning
        trained_cfg = json.loads(trained.read_text()) if trained.exists() else {}
        self.reward_weight = trained_cfg.get("reward_weight", 1.0)
        self.change_weight = trained_cfg.get("change_weight", 1.0)
        self.rng = np.random.default_rng(seed)
        self.prompts: list[list[int]] = []  # token sequences of every training transition seen so far
        self.targets: list[list[int]] = []
        self.known: set[str] = set()

    def _refresh(self, parts: tuple[str, ...] | None = None) -> int:
        """Tokenise the episodes that arrived since the last call (only those; from ``parts`` only when
        given, in the store's order); returns transitions."""
        from mbpo_ray.world_model.data import load_episodes
        from mbpo_ray.world_model.train import TokenData

        self.store.refresh()
        episodes = self.store.episodes
        if parts is not None:
            episodes = [episodes[i] for i in self.store.episodes_in(parts)]
        new = [e.episode_id for e in episodes
               if e.chunks > 0 and e.episode_id not in self.heldout and e.episode_id not in self.known]
        if new:  # frames are dropped once tokenised: only the token lists are kept
            part = TokenData(load_episodes(self.store, new), self.tokenizer, self.layout)
            self.prompts += part.prompts
            self.targets += part.targets
            self.known.update(new)
        return len(self.prompts)

    def finetune(self, steps: int, version: int, parts: tuple[str, ...] | None = None, seed: int | None = None) -> dict:
        """``steps`` updates on every transition seen so far (of the store ``parts`` named), batches drawn
        with ``seed`` (or the learner's own generator); the result is published as ``version``."""
        from mbpo_ray.world_model.train import collate, segment_losses

        t0 = time.perf_counter()
        n = self._refresh(parts)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        losses: dict[str, list[float]] = {}
        for _ in range(steps):
            idx = self.rng.integers(0, n, self.batch_size)
            ids, labels, seg = collate([self.prompts[i] for i in idx], [self.targets[i] for i in idx], self.layout)
            out = segment_losses(self.model, ids, labels, seg, self.reward_weight, self.layout.sp.pad,
                                 self.change_weight, self.layout.sp.keep)
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            for k, v in out.items():
                losses.setdefault(k, []).append(float(v))
        self.publish(version)
        return {**{k: float(np.mean(v)) for k, v in losses.items()}, "transitions": n, "episodes": len(self.known),
                "seconds": time.perf_counter() - t0}

    def send_weights(self, version: int) -> float:
        """Broadcast the model as ``version`` into the replicas' running engines; seconds taken."""
        t0 = time.perf_counter()
        self.channel.send(self.model.state_dict(), version)
        return time.perf_counter() - t0

    def publish(self, version: int) -> None:
        """The model as it is now becomes ``version`` of the world model every replica pulls."""
        self.weights.publish(WORLD_MODEL, self.model.state_dict(), version)

    def save(self, path: str) -> str:
        """The model (``path``) and, next to it, the optimizer state a resumed run continues from."""
        self.model.save_pretrained(Path(path), safe_serialization=True)
        torch.save(self.opt.state_dict(), Path(path).parent / LEARNER_STATE)
        return path


def make_world_model_learner(world_model_dir: str, store_uri: str, weights_uri: str, num_cpus: float = 1.0,
                             num_gpus: float = 0.0, **kwargs):
    env = {"OMP_NUM_THREADS": str(max(1, int(num_cpus)))}
    cls = ray.remote(WorldModelLearner).options(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": env})
    return cls.remote(world_model_dir, store_uri, weights_uri, **kwargs)
