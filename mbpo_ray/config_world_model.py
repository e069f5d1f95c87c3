"""The world model's configuration sections: the VQ image tokenizer and the UMM (``tokenizer.*``,
``world_model.*``), re-exported by :mod:`mbpo_ray.config`."""

from __future__ import annotations

from dataclasses import dataclass

from mbpo_ray.config_loader import check_choice, check_range, fail

TOKENIZER_PRESETS = ("cpu", "cluster")
ENGINES = ("vllm", "hf")


@dataclass(frozen=True)
class TokenizerConfig:
    """VQ image tokenizer (one codebook for both views)."""

    preset: str = "cpu"
    steps: int = 1000  # ~0.6 s/step for the cpu preset on 2 CPU cores
    batch_size: int = 32
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_choice("tokenizer.preset", self.preset, TOKENIZER_PRESETS)
        check_range("tokenizer.steps", self.steps, 1, 10_000_000)
        check_range("tokenizer.batch_size", self.batch_size, 1, 4096)
        check_range("tokenizer.lr", self.lr, 1e-7, 1.0)


@dataclass(frozen=True)
class WorldModelConfig:
    """The UMM backbone (any Hugging Face causal LM type) and its training."""

    backbone: str = "llama"  # a transformers model_type with a causal-LM head
    # a folder with a pretrained transformers causal LM (save_pretrained): its vocabulary is extended by the
    # layout's tokens and its own config (size, layers) is kept; backbone/hidden_size/num_* are then unused
    pretrained: str = ""
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    max_minutes: float = 45.0  # wall-clock cap on training
    checkpoint_every: int = 500
    patience: int = 0  # stop after this many held-out evaluations without a new best (0 = never)
    holdout_episodes: float = 0.2  # fraction of episodes held out for the quality report
    keep_codes: bool = True  # <keep> for a code equal to the current view's at its position
    action_sums: bool = False  # the prompt also holds the chunk's per-dimension action sums (its net motion)
    keep_pixels: bool = True  # imagination: a patch whose code is kept shows the current frame's pixels
    reward_weight: float = 1.0  # the yes/no answer counts this many times in the training loss
    change_weight: float = 1.0  # a view code that is not <keep> (a patch that changes) counts this many times
    reward_source: str = "token"  # imagination's P(yes): token | frames (CKPT/reward) | mean of both
    engine: str = "vllm"
    temperature: float = 0.0  # imagination sampling temperature (0 = greedy)
    gpu_memory_utilization: float = 0.9  # vllm on a GPU: the share of the GPU's memory a replica takes

    def __post_init__(self) -> None:
        check_range("world_model.hidden_size", self.hidden_size, 16, 16384)
        check_range("world_model.num_layers", self.num_layers, 1, 256)
        check_range("world_model.num_heads", self.num_heads, 1, 256)
        if self.hidden_size % self.num_heads:
            fail("world_model.num_heads", self.num_heads, f"must divide hidden_size={self.hidden_size}")
        check_range("world_model.steps", self.steps, 1, 10_000_000)
        check_range("world_model.batch_size", self.batch_size, 1, 4096)
        check_range("world_model.lr", self.lr, 1e-7, 1.0)
        check_range("world_model.max_minutes", self.max_minutes, 0.1, 100_000)
        check_range("world_model.holdout_episodes", self.holdout_episodes, 0.0, 0.9)
        check_range("world_model.reward_weight", self.reward_weight, 0.0, 1e4)
        check_range("world_model.change_weight", self.change_weight, 0.0, 1e4)
        if self.change_weight != 1.0 and not self.keep_codes:
            fail("world_model.change_weight", self.change_weight,
                 "weights the codes that are not <keep>; it needs world_model.keep_codes=true")
        check_range("world_model.patience", self.patience, 0, 1_000_000)
        check_choice("world_model.engine", self.engine, ENGINES)
        check_choice("world_model.reward_source", self.reward_source, REWARD_SOURCES)
        check_range("world_model.temperature", self.temperature, 0.0, 10.0)
        check_range("world_model.gpu_memory_utilization", self.gpu_memory_utilization, 0.01, 1.0)


REWARD_SOURCES = ("token", "frames", "mean")  # world_model.reward_source (world_model/evaluate.py)
