"""Configuration: frozen dataclasses validated at construction.

YAML files and dotted ``--section.field=value`` overrides are only loaders (``config_loader``): they
build a plain dict that :func:`build_config` turns into a :class:`Config`. Any bad value fails here,
at start, with one :class:`ConfigError` naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbpo_ray.config_loader import (  # noqa: F401 (parse_task_ids: part of this module's interface)
    ConfigError,
    check_choice,
    check_range,
    fail,
    from_dict,
    load_yaml,
    merge,
    parse_overrides,
    parse_task_ids,
)
from mbpo_ray.config_world_model import (  # noqa: F401 (part of this module's interface)
    ENGINES,
    REWARD_SOURCES,
    TOKENIZER_PRESETS,
    TokenizerConfig,
    WorldModelConfig,
)
from mbpo_ray.placement import STRATEGIES, parse_resources

__all__ = ["Config", "ConfigError", "build_config", "parse_overrides"]  # and the section dataclasses

# Suite facts from LIBERO's evaluation protocol (max steps per episode).
SUITE_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
SOURCES = ("demo", "real", "imagined", "branch")  # branch: a policy branch run in LIBERO from a stored state
RENDERERS = ("egl", "osmesa")


def default_cache_dir() -> str:
    """Where datasets and checkpoints live (outside git). Override with MBPO_RAY_CACHE."""
    return os.environ.get("MBPO_RAY_CACHE", str(Path("~/.cache/mbpo-ray").expanduser()))


@dataclass(frozen=True)
class EnvConfig:
    """One LIBERO task as an environment with chunked execution."""

    suite: str = "libero_spatial"
    task_id: int = 0
    image_size: int = 128
    chunk_size: int = 10
    settle_steps: int = 10
    max_steps: int = 0  # 0 = the suite's own limit from LIBERO's evaluation protocol
    renderer: str = "egl"
    # reset the built scene in place (0.03 s instead of 2-4 s): bit for bit a rebuild on every task of
    # the four LIBERO suites (benchmarks/reset_equivalence.py); false rebuilds it at every reset
    soft_reset: bool = True

    def __post_init__(self) -> None:
        check_choice("env.suite", self.suite, SUITE_MAX_STEPS)
        n_tasks = 90 if self.suite == "libero_90" else 10
        check_range("env.task_id", self.task_id, 0, n_tasks - 1)
        check_range("env.image_size", self.image_size, 16, 512)
        check_range("env.chunk_size", self.chunk_size, 1, 100)
        check_range("env.settle_steps", self.settle_steps, 0, 100)
        check_range("env.max_steps", self.max_steps, 0, 10_000)
        check_choice("env.renderer", self.renderer, RENDERERS)

    @property
    def horizon(self) -> int:
        """Max env steps per episode after the settle steps."""
        return self.max_steps or SUITE_MAX_STEPS[self.suite]


@dataclass(frozen=True)
class ExpertConfig:
    """Scripted pick-and-place expert reading privileged simulator state."""

    noise_std: float = 0.05  # std of Gaussian noise added to the translation command (normalised units)
    waypoint_tolerance: float = 0.02  # metres
    gain: float = 10.0  # action = clip(gain * position error, -1, 1)

    def __post_init__(self) -> None:
        check_range("expert.noise_std", self.noise_std, 0.0, 1.0)
        check_range("expert.waypoint_tolerance", self.waypoint_tolerance, 0.002, 0.1)
        check_range("expert.gain", self.gain, 0.1, 100.0)


@dataclass(frozen=True)
class CollectConfig:
    """Demonstration collection with the scripted expert."""

    episodes: int = 4
    workers: int = 2
    first_init_state: int = 0  # episodes use init states first_init_state, +1, ... (mod 50)
    seed: int = 0
    keep_failures: bool = False  # failed expert episodes are dropped from demonstration stores

    def __post_init__(self) -> None:
        check_range("collect.episodes", self.episodes, 1, 100_000)
        check_range("collect.workers", self.workers, 1, 512)
        check_range("collect.first_init_state", self.first_init_state, 0, 49)


POLICY_ARCHS = ("binned_vla", "pretrained_vla")  # names in mbpo_ray.policy.POLICIES
OBJECTIVES = ("ppo", "grpo", "bc")  # mbpo.objective (mbpo_ray.rl.objectives)
ADV_NORMS = ("mean", "std", "none")  # mbpo.adv_norm
MODES = ("mbpo", "online", "simulator")  # mbpo.mode: where the branches come from (mbpo_ray/rl/online.py)
REWARD_MODES = ("hard", "soft")  # mbpo.reward_mode (mbpo_ray.rl.objectives.branch_returns)
START_SAMPLERS = ("uniform", "reverse", "grasp", "initial")  # mbpo.start_sampler (mbpo_ray.replay.samplers)
PLACEMENTS = tuple(STRATEGIES)  # mbpo.learner_placement (Ray's placement strategies)
LEARNER_BACKENDS = ("ddp", "fsdp")  # mbpo.learner_backend (learners/sharding.py)


def _check_tasks(name: str, spec: str, suite: str) -> None:
    n_tasks = 90 if suite == "libero_90" else 10
    try:
        ids = parse_task_ids(spec)
    except ValueError:
        fail(name, spec, "task ids like 0-9 or 0,3,5-7")
    if ids[0] < 0 or ids[-1] >= n_tasks:
        fail(name, spec, f"{suite} has tasks 0-{n_tasks - 1}")


@dataclass(frozen=True)
class PolicyConfig:
    """The VLA policy: architecture (a name in the policy registry) and its sizes."""

    arch: str = "binned_vla"
    image_size: int = 64  # both views are resized to this from the store's frames
    vision_widths: str = "32,64,128"  # ConvNext stage widths (one stage per width)
    vision_depths: str = "1,1,2"
    text_width: int = 128
    hidden_size: int = 256  # fused trunk width
    n_bins: int = 256  # per action dimension, as the world model's action tokens
    proprio: bool = False  # the world model imagines images only: a proprio input has no imagined value
    backbone_path: str = ""  # pretrained_vla: a local transformers VLM folder (save_pretrained)
    lora_rank: int = 16  # pretrained_vla: LoRA rank on the backbone (0 = full finetune)

    def __post_init__(self) -> None:
        check_choice("policy.arch", self.arch, POLICY_ARCHS)
        check_range("policy.image_size", self.image_size, 16, 512)
        for name in ("vision_widths", "vision_depths"):
            value = getattr(self, name)
            try:
                ints = [int(v) for v in str(value).split(",")]
            except ValueError:
                ints = []
            if not ints or min(ints) < 1:
                fail(f"policy.{name}", value, "comma-separated positive integers, e.g. 32,64,128")
        if len(self.widths) != len(self.depths):
            fail("policy.vision_depths", self.vision_depths, "one depth per entry of policy.vision_widths")
        check_range("policy.text_width", self.text_width, 8, 8192)
        check_range("policy.hidden_size", self.hidden_size, 16, 16384)
        check_range("policy.n_bins", self.n_bins, 2, 4096)
        check_range("policy.lora_rank", self.lora_rank, 0, 4096)
        if self.arch == "pretrained_vla" and not self.backbone_path:
            fail("policy.backbone_path", self.backbone_path, "a local folder of a transformers VLM (SmolVLM)")

    @property
    def widths(self) -> list[int]:
        return [int(v) for v in str(self.vision_widths).split(",")]

    @property
    def depths(self) -> list[int]:
        return [int(v) for v in str(self.vision_depths).split(",")]


@dataclass(frozen=True)
class SFTConfig:
    """Behaviour cloning of the policy on the first successful demonstrations of each task."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 100
    demos_per_task: int = 10  # the first n successful demonstrations per task (few-shot budget)
    rollouts_per_task: int = 0  # and the first n successful recorded policy rollouts (self-imitation)
    tasks: str = ""  # task ids of env.suite, e.g. 0-9; empty = every task in the store
    seed: int = 0
    checkpoint_every: int = 500
    max_minutes: float = 60.0  # wall-clock cap on training
    augment: bool = True  # random shifts of up to image_size/16 pixels

    def __post_init__(self) -> None:
        check_range("sft.steps", self.steps, 1, 10_000_000)
        check_range("sft.batch_size", self.batch_size, 1, 4096)
        check_range("sft.lr", self.lr, 1e-7, 1.0)
        check_range("sft.warmup_steps", self.warmup_steps, 0, 10_000_000)
        check_range("sft.demos_per_task", self.demos_per_task, 1, 100_000)
        check_range("sft.rollouts_per_task", self.rollouts_per_task, 0, 100_000)
        if self.tasks != "":
            _check_tasks("sft.tasks", self.tasks, "libero_90")
        check_range("sft.checkpoint_every", self.checkpoint_every, 1, 10_000_000)
        check_range("sft.max_minutes", self.max_minutes, 0.01, 100_000)


@dataclass(frozen=True)
class EvalConfig:
    """LIBERO's evaluation protocol: per task, the fixed init states 0..n-1 in order."""

    suite: str = "libero_spatial"
    tasks: str = "0-9"
    episodes_per_task: int = 50
    workers: int = 2
    seed: int = 0
    sample: bool = False  # False: greedy actions; True: sampled, one seed per episode
    videos: int = 2  # episodes written as GIFs (head and wrist side by side)
    max_steps: int = 0  # 0 = the suite's own limit (the standard protocol); smaller only for smoke tests

    def __post_init__(self) -> None:
        check_choice("eval.suite", self.suite, SUITE_MAX_STEPS)
        _check_tasks("eval.tasks", self.tasks, self.suite)
        check_range("eval.episodes_per_task", self.episodes_per_task, 1, 50)
        check_range("eval.workers", self.workers, 1, 512)
        check_range("eval.videos", self.videos, 0, 10_000)
        check_range("eval.max_steps", self.max_steps, 0, 10_000)

    @property
    def task_ids(self) -> list[int]:
        return parse_task_ids(self.tasks)


@dataclass(frozen=True)
class MBPOConfig:
    """The distributed loop: imagined branches from real start states, PPO, real data, weight sync.

    Defaults follow the paper where it gives them (clip, gamma, lambda, learning rates, 2-chunk
    branches); the sizes are those of the CPU default (the paper: 512 branches, 20 updates per batch).
    """

    iterations: int = 4
    # mbpo: learn from branches imagined by the world model. online: from episodes rolled out in real
    # LIBERO by the env runners (the online-RL baseline at a real-data budget; no world model).
    # simulator: the branches mbpo would imagine (same starts, n_chunks, group_size) run in LIBERO
    # itself: VLA-MBPO with a perfect world model, the ceiling of what imagination can give
    mode: str = "mbpo"
    # ppo: VLA-MBPO (GAE + critic). grpo: group-relative advantages over group_size branches from each
    # start state, no critic. bc: behaviour cloning inside the world model (the paper's baseline):
    # imitate the imagined chunks of branches the world model judged successful (mbpo_ray/rl/objectives.py)
    objective: str = "ppo"
    # bc: keep the chunk steps of every successful branch (up to this many rows, oldest dropped first) and
    # draw every minibatch from all of them (0: from the current batch only)
    bc_buffer: int = 0
    bc_demo_coef: float = 0.0  # bc: weight of a cloning term on the starting policy's SFT demonstrations
    group_size: int = 1  # branches per start state (grpo: 4-8; branches must be a multiple of it)
    adv_norm: str = "mean"  # ppo: mean (centre), std (centre and scale to unit variance), none
    # grpo: a branch's return from the world model's answers. hard: gamma^j at the first step whose
    # P(yes) passes 0.5; soft: the expected discounted success, each step's P(yes) read as the
    # probability of succeeding there (graded: branches that both fail still differ)
    reward_mode: str = "hard"
    kl_coef: float = 0.0  # weight of the KL to the starting (SFT) policy, per action token
    target_kl: float = 0.0  # stop a batch's updates once the chunk-level approx KL passes this (0 = never)
    null_control: bool = False  # shuffle imagined returns across branches: the no-signal control
    # a folder of imagined batches (rl/batch_cache.py): a run on the starting weights reads a batch an
    # earlier run with the same inputs imagined there (its null control: the same branches), or keeps its own
    batch_cache: str = ""
    # where branches start: uniform over every stored chunk boundary, or reverse: a window of the last
    # start_window chunks of each successful episode, widening by start_window_growth chunks per
    # iteration (a reverse curriculum); states of failed episodes are drawn fail_weight times as often;
    # or grasp: the start_window chunk boundaries up to each episode's first gripper close; or initial:
    # every episode's first state
    start_sampler: str = "uniform"
    start_window: int = 3
    start_window_growth: float = 0.5
    fail_weight: float = 1.0
    tasks: str = "0-1"  # tasks of env.suite whose start states are branched from
    branches: int = 32  # imagined branches per iteration (all world-model workers together)
    n_chunks: int = 2  # branch length in chunks; bootstrapped with V(last observation)
    temperature: float = 1.0  # world-model sampling temperature during imagination
    # the policy's sampling temperature in imagination (> 1 explores: a group's branches differ more);
    # the learners score log-probs at the same temperature
    policy_temperature: float = 1.0
    # > 0: a branch stops before a transition whose uncertainty (mean surprisal of the generated image
    # codes, nats) exceeds this; 0 = off
    max_uncertainty: float = 0.0
    clip: float = 0.1
    gamma: float = 0.99
    lam: float = 0.95
    actor_lr: float = 5e-6
    critic_lr: float = 1e-4
    updates_per_batch: int = 4  # update-to-data ratio: gradient steps per imagined batch
    minibatch_size: int = 16
    value_coef: float = 1.0
    entropy_coef: float = 0.0
    critic_warmup: int = 1  # first iterations train the critic only (the SFT critic is untrained)
    # checkpoint: the critic as the starting checkpoint has it (SFT leaves it at its random init);
    # zero: its output layer zeroed, V = 0 everywhere until imagined successes teach it
    critic_init: str = "checkpoint"
    # ppo: value-head regression steps on the Monte-Carlo returns of the store's real episodes before
    # the loop starts, and the weight of such a real minibatch mixed into every critic update
    critic_fit_steps: int = 0
    critic_real_coef: float = 0.0
    learners: int = 2  # DDP ranks of the policy learner group (gloo on CPU, NCCL on GPU)
    wm_workers_min: int = 2  # world-model replicas (vLLM engines), autoscaled between min and max
    wm_workers_max: int = 2
    max_staleness: int = 1  # policy versions an imagined sample may lag the learner by
    real_every: int = 2  # every K iterations env runners roll the policy out in LIBERO (0 = never)
    real_episodes: int = 2
    env_runners: int = 1
    eval_every: int = 0  # every K iterations evaluate on eval_episodes init states per task (0 = at the end only)
    eval_episodes: int = 2  # 0 = no evaluation
    wm_finetune_every: int = 0  # every K iterations finetune the world model on the store (0 = never)
    wm_finetune_steps: int = 50
    checkpoint_every: int = 2
    seed: int = 0
    # Ray resources; the defaults (2 x 0.5 + 2 x 0.25 + 0.5) fill a 2-core machine. On a cluster: a GPU
    # per world-model replica and per learner rank (configs/cluster.yaml)
    worker_cpus: float = 0.5
    worker_gpus: float = 0.0
    learner_cpus: float = 0.25  # per learner rank
    learner_gpus: float = 0.0
    runner_cpus: float = 0.5  # per env runner
    wm_learner_cpus: float = 0.5  # the world-model learner (only with wm_finetune_every)
    wm_learner_gpus: float = 0.0
    # custom Ray node resources each actor of a kind needs ("name:amount,..."), to pin it to a kind of
    # node (e.g. world-model replicas on inference nodes: worker_resources=inference_node:1)
    worker_resources: str = ""
    learner_resources: str = ""
    runner_resources: str = ""
    # how the learner ranks' placement group spreads them over nodes: pack (fewest nodes), spread,
    # strict_pack (one node), strict_spread (one rank per node)
    learner_placement: str = "pack"
    # ddp: every rank holds the whole policy, gradients and optimizer state; fsdp: torch FSDP2, each of
    # M ranks holds 1/M of them (for policies too large for one device)
    learner_backend: str = "ddp"
    # how world-model replicas get each new policy version: file (they read it from the weight store)
    # or broadcast (the learner's rank 0 pushes it over a process group of their own; the weight
    # store still holds every version, for checkpoints and replicas that join late)
    weight_sync: str = "file"
    # the learner's forward passes: auto (bfloat16 autocast on a GPU, float32 on a CPU), bf16, fp32
    learner_precision: str = "auto"

    def __post_init__(self) -> None:
        for kind in ("worker", "learner", "runner"):
            parse_resources(f"mbpo.{kind}_resources", getattr(self, f"{kind}_resources"))
        check_choice("mbpo.learner_placement", self.learner_placement, PLACEMENTS)
        check_choice("mbpo.learner_backend", self.learner_backend, LEARNER_BACKENDS)
        check_choice("mbpo.weight_sync", self.weight_sync, ("file", "broadcast"))
        check_choice("mbpo.learner_precision", self.learner_precision, ("auto", "bf16", "fp32"))
        for name in ("worker_cpus", "worker_gpus", "learner_cpus", "learner_gpus", "runner_cpus",
                     "wm_learner_cpus", "wm_learner_gpus"):
            check_range(f"mbpo.{name}", getattr(self, name), 0.0, 1024.0)
        check_range("mbpo.iterations", self.iterations, 1, 10_000_000)
        _check_tasks("mbpo.tasks", self.tasks, "libero_90")
        check_range("mbpo.branches", self.branches, 1, 10_000_000)
        check_range("mbpo.n_chunks", self.n_chunks, 1, 1000)
        check_range("mbpo.temperature", self.temperature, 0.0, 10.0)
        check_range("mbpo.policy_temperature", self.policy_temperature, 0.05, 10.0)
        check_range("mbpo.clip", self.clip, 1e-4, 1.0)
        check_range("mbpo.gamma", self.gamma, 0.0, 1.0)
        check_range("mbpo.lam", self.lam, 0.0, 1.0)
        check_range("mbpo.actor_lr", self.actor_lr, 0.0, 1.0)
        check_range("mbpo.critic_lr", self.critic_lr, 0.0, 1.0)
        check_range("mbpo.updates_per_batch", self.updates_per_batch, 1, 100_000)
        check_range("mbpo.minibatch_size", self.minibatch_size, 1, 1_000_000)
        check_choice("mbpo.mode", self.mode, MODES)
        if self.mode != "mbpo" and self.wm_finetune_every:
            raise ConfigError(f"mbpo.mode={self.mode} has no world model to finetune: set mbpo.wm_finetune_every=0")
        check_choice("mbpo.objective", self.objective, OBJECTIVES)
        check_range("mbpo.bc_buffer", self.bc_buffer, 0, 100_000_000)
        check_range("mbpo.bc_demo_coef", self.bc_demo_coef, 0.0, 1e6)
        if self.objective != "bc" and (self.bc_buffer or self.bc_demo_coef):
            raise ConfigError(f"mbpo.bc_buffer and mbpo.bc_demo_coef belong to behaviour cloning: set "
                              f"mbpo.objective=bc or leave them at 0 (mbpo.objective={self.objective})")
        check_choice("mbpo.adv_norm", self.adv_norm, ADV_NORMS)
        check_choice("mbpo.reward_mode", self.reward_mode, REWARD_MODES)
        if self.reward_mode == "soft" and self.objective != "grpo":
            raise ConfigError(f"mbpo.reward_mode=soft is read by the group-relative objective only: set "
                              f"mbpo.objective=grpo or mbpo.reward_mode=hard (mbpo.objective={self.objective})")
        check_choice("mbpo.start_sampler", self.start_sampler, START_SAMPLERS)
        check_range("mbpo.group_size", self.group_size, 1, 4096)
        if self.branches % self.group_size:
            raise ConfigError(f"mbpo.branches={self.branches} is not a multiple of mbpo.group_size={self.group_size}: "
                              "every start state gets group_size branches")
        if self.objective == "grpo" and self.group_size < 2:
            raise ConfigError("mbpo.objective=grpo compares branches from the same start state: set mbpo.group_size >= 2")
        for name in ("kl_coef", "target_kl", "start_window_growth"):
            check_range(f"mbpo.{name}", getattr(self, name), 0.0, 1e6)
        check_range("mbpo.start_window", self.start_window, 1, 1_000_000)
        check_range("mbpo.critic_fit_steps", self.critic_fit_steps, 0, 10_000_000)
        check_range("mbpo.max_uncertainty", self.max_uncertainty, 0.0, 1e6)
        check_range("mbpo.critic_real_coef", self.critic_real_coef, 0.0, 1e6)
        check_range("mbpo.fail_weight", self.fail_weight, 0.0, 1e6)
        check_choice("mbpo.critic_init", self.critic_init, ("checkpoint", "zero"))
        check_range("mbpo.learners", self.learners, 1, 4096)
        if self.branches // self.group_size < self.learners:
            raise ConfigError(f"mbpo.branches={self.branches} hold {self.branches // self.group_size} groups of "
                              f"mbpo.group_size={self.group_size}, fewer than mbpo.learners={self.learners}: every "
                              "learner rank needs at least one group per batch; raise branches or lower learners")
        check_range("mbpo.wm_workers_min", self.wm_workers_min, 1, 4096)
        check_range("mbpo.wm_workers_max", self.wm_workers_max, self.wm_workers_min, 4096)
        check_range("mbpo.max_staleness", self.max_staleness, 0, 1000)
        for name in ("real_every", "eval_every", "wm_finetune_every", "critic_warmup"):
            check_range(f"mbpo.{name}", getattr(self, name), 0, 10_000_000)
        check_range("mbpo.real_episodes", self.real_episodes, 1, 100_000)
        check_range("mbpo.env_runners", self.env_runners, 1, 4096)
        check_range("mbpo.eval_episodes", self.eval_episodes, 0, 50)
        check_range("mbpo.checkpoint_every", self.checkpoint_every, 1, 10_000_000)

    @property
    def task_ids(self) -> list[int]:
        return parse_task_ids(self.tasks)

    def custom_resources(self, kind: str) -> dict[str, float]:
        """The custom node resources of one actor of ``kind`` (worker, learner, runner)."""
        return parse_resources(f"mbpo.{kind}_resources", getattr(self, f"{kind}_resources"))


@dataclass(frozen=True)
class RunConfig:
    """``mbpo-ray run`` (``make run``): the whole pipeline at a size a laptop finishes in minutes."""

    episodes_per_task: int = 4  # scripted demonstrations per task of mbpo.tasks
    tokenizer_steps: int = 150
    world_model_steps: int = 150
    sft_steps: int = 300

    def __post_init__(self) -> None:
        for name in ("episodes_per_task", "tokenizer_steps", "world_model_steps", "sft_steps"):
            check_range(f"run.{name}", getattr(self, name), 1, 10_000_000)


@dataclass(frozen=True)
class LoggingConfig:
    """What a run shows besides metrics.jsonl and TensorBoard scalars."""

    videos: int = 2  # evaluation episodes and imagined branches (next to the real ones) as MP4 + TensorBoard video
    wandb: bool = False  # also log to Weights & Biases (OUT/wandb)
    wandb_project: str = "mbpo-ray"
    wandb_mode: str = "offline"  # offline needs no network (`wandb sync OUT/wandb/offline-run-*` later); online

    def __post_init__(self) -> None:
        check_range("logging.videos", self.videos, 0, 64)
        check_choice("logging.wandb_mode", self.wandb_mode, ("offline", "online"))


@dataclass(frozen=True)
class Config:
    cache_dir: str = field(default_factory=default_cache_dir)
    env: EnvConfig = field(default_factory=EnvConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)
    run: RunConfig = field(default_factory=RunConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_config(
    path: str | os.PathLike | None = None,
    overrides: typing.Sequence[str] | dict[str, Any] = (),
) -> Config:
    """YAML file (optional) + dotted overrides -> validated :class:`Config`."""
    data = load_yaml(path) if path else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return from_dict(Config, merge(data, extra), "")
