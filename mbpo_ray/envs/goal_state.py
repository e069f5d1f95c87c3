"""Where a recorded observation stands against its task's goal, read from LIBERO's own simulator state.

A pick-and-place goal of LIBERO (``(On obj target)``) holds when the object touches the target, sits
no lower than it, and their body centres are less than 3 cm apart in the horizontal plane
(``ObjectState.check_ontop``). A camera sees contact and height well; the 3 cm span about 4.6 pixels
of a 128-pixel agent view at the plate (:func:`radius_in_pixels`), a centimetre about one and a half. :func:`goal_states` restores every observation of stored
episodes (their ``sim_state``) and measures it against the goal, so a reward's or a policy's errors
can be sorted by what the scene actually was:

- ``goal``: LIBERO's goal predicate holds;
- ``on_target_off_centre``: the object rests on the target (contact, not below it) but its centre is
  outside the predicate's radius;
- ``lifted``: the object is more than ``LIFT`` above where it stood at the episode's first
  observation (in the gripper, or falling);
- ``elsewhere``: any other state (not yet moved, dropped, knocked over).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbpo_ray.envs.libero_env import EnvError, LiberoEnv

ONTOP_RADIUS = 0.03  # LIBERO's check_ontop: the largest horizontal distance of the centres (metres)
LIFT = 0.03  # metres above the object's first recorded height that count as lifted
CATEGORIES = ("goal", "on_target_off_centre", "lifted", "elsewhere")


@dataclass(frozen=True)
class GoalState:
    satisfied: bool  # LIBERO's goal predicate
    contact: bool  # the object touches the target (always False for a region target)
    offset_xy: float  # metres between the object's and the target's centres, horizontal plane
    height: float  # the object's centre above the target's (metres)
    object_z: float  # the object's centre above the world origin (metres)
    target_xyz: np.ndarray  # the target's centre (body or region site), world frame (metres)


@dataclass
class GoalStates:
    """One entry per restored observation, aligned with the rows asked for."""

    satisfied: np.ndarray  # (N,) bool
    contact: np.ndarray  # (N,) bool
    offset_xy: np.ndarray  # (N,) float
    height: np.ndarray  # (N,) float
    lift: np.ndarray  # (N,) the object's height above its first recorded observation
    target_px: np.ndarray  # (N, 2) float: (row, column) of the target's centre in the upright head view

    def category(self) -> np.ndarray:
        """(N,) one of :data:`CATEGORIES` per observation."""
        out = np.full(len(self.satisfied), "elsewhere", dtype=object)
        out[self.lift > LIFT] = "lifted"
        out[self.contact & (self.height >= 0) & ~self.satisfied] = "on_target_off_centre"
        out[self.satisfied] = "goal"
        return out


def goal_of(env: LiberoEnv) -> tuple[str, str, str]:
    """(relation, object, target) of the task's single binary goal, or raise :class:`EnvError`."""
    goal = env.raw.parsed_problem["goal_state"]
    if len(goal) != 1 or len(goal[0]) != 3:
        raise EnvError(f"one binary goal (relation, object, target) is supported; "
                       f"task {env.cfg.suite}/{env.cfg.task_id} has {goal!r}")
    relation, obj, target = goal[0]
    if obj not in env.raw.obj_body_id:
        raise EnvError(f"goal object {obj!r} is not an object of task {env.cfg.suite}/{env.cfg.task_id}")
    return relation.lower(), obj, target


def measure(env: LiberoEnv, sim_state: np.ndarray, goal: tuple[str, str, str] | None = None) -> GoalState:
    """Set the simulator to ``sim_state`` (no stepping, no rendering) and measure the goal there
    (``goal``: the task's :func:`goal_of`, parsed here when not given)."""
    raw = env.raw
    state = np.asarray(sim_state, dtype=np.float64).ravel()
    if state.size != raw.sim.get_state().flatten().size:
        raise EnvError(f"a simulator state of {state.size} values does not fit task {env.cfg.suite}/{env.cfg.task_id}")
    raw.sim.set_state_from_flattened(state)
    raw.sim.forward()
    relation, obj, target = goal or goal_of(env)
    pos = np.array(raw.sim.data.body_xpos[raw.obj_body_id[obj]])
    if target in raw.obj_body_id:
        where = np.array(raw.sim.data.body_xpos[raw.obj_body_id[target]])
        states = raw.object_states_dict
        contact = bool(states[target].check_contact(states[obj]))
    else:  # a region site
        where = np.array(raw.sim.data.site_xpos[raw.sim.model.site_name2id(target)])
        contact = False
    return GoalState(satisfied=bool(raw._eval_predicate([relation, obj, target])), contact=contact,
                     offset_xy=float(np.linalg.norm(pos[:2] - where[:2])), height=float(pos[2] - where[2]),
                     object_z=float(pos[2]), target_xyz=where)


def head_pixels(env: LiberoEnv, points: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, 2) float (row, column) of world ``points`` (N, 3) in the upright head view of ``size``
    pixels (the env's image size by default), continuous (pixel ``(i, j)`` spans ``[i, i + 1) x
    [j, j + 1)``), unclipped: robosuite's camera projection as the upright frames show it (its rows
    already run top-down there; its columns are mirrored)."""
    from robosuite.utils.camera_utils import get_camera_transform_matrix

    from mbpo_ray.envs.libero_env import HEAD_CAMERA

    size = size or env.cfg.image_size
    m = get_camera_transform_matrix(env.raw.sim, HEAD_CAMERA, size, size)
    h = np.concatenate([np.asarray(points, np.float64).reshape(-1, 3), np.ones((len(points), 1))], axis=1) @ m.T
    x, y = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2]
    return np.stack([y, size - x], axis=1)


def goal_states(store, rows: list[tuple[str, int]], image_size: int = 128) -> GoalStates:
    """Goal states of ``rows`` ((episode id, row index) pairs) of ``store``, restored task by task in
    real LIBERO. Every episode's first row is restored too, for the object's starting height."""
    from mbpo_ray.config import EnvConfig

    meta = {e.episode_id: e for e in store.episodes}
    missing = sorted({eid for eid, _ in rows} - set(meta))
    if missing:
        raise EnvError(f"{len(missing)} episode(s) are not in the store, e.g. {missing[0]!r}")
    out = {k: np.zeros(len(rows), dtype=dt) for k, dt in
           (("satisfied", bool), ("contact", bool), ("offset_xy", float), ("height", float), ("lift", float))}
    out["target_px"] = np.zeros((len(rows), 2))
    by_task: dict[tuple[str, int], list[int]] = {}
    for i, (eid, _) in enumerate(rows):
        by_task.setdefault((meta[eid].suite, meta[eid].task_id), []).append(i)
    for (suite, task), idx in sorted(by_task.items()):
        with LiberoEnv(EnvConfig(suite=suite, task_id=task, image_size=image_size)) as env:
            env.reset(0, render=False)
            _measure_task(env, store, [rows[i] for i in idx], idx, out)
    return GoalStates(**out)


def _measure_task(env: LiberoEnv, store, rows: list[tuple[str, int]], idx: list[int], out: dict) -> None:
    states: dict[str, tuple[list, float]] = {}  # per episode: recorded states, the object's first height
    goal = goal_of(env)
    targets = np.zeros((len(rows), 3))
    for k, ((eid, row), i) in enumerate(zip(rows, idx, strict=True)):
        if eid not in states:
            recorded = store.read_episode(eid, ["sim_state"]).column("sim_state").to_pylist()
            if not recorded or not recorded[0]:
                raise EnvError(f"episode {eid} has no simulator states recorded: its goal states cannot be "
                               "measured (stores imported without states cannot be)")
            states[eid] = recorded, measure(env, recorded[0], goal).object_z
        recorded, first = states[eid]
        if not 0 <= row < len(recorded) or not recorded[row]:
            raise EnvError(f"episode {eid} has no simulator state recorded for row {row}")
        g = measure(env, recorded[row], goal)
        out["satisfied"][i], out["contact"][i] = g.satisfied, g.contact
        out["offset_xy"][i], out["height"][i], out["lift"][i] = g.offset_xy, g.height, g.object_z - first
        targets[k] = g.target_xyz
    out["target_px"][idx] = head_pixels(env, targets)  # one fixed camera: projected together


def last_observations(store, eps: list) -> tuple[np.ndarray, np.ndarray]:
    """(category, the object's offset from the target's centre in metres) at the last observation of
    each of the stored episodes ``eps`` (``EpisodeMeta``)."""
    g = goal_states(store, [(e.episode_id, e.rows - 1) for e in eps], image_size=store.spec.image_size)
    return g.category(), g.offset_xy


def outcome_summary(cats: np.ndarray, offset: np.ndarray, success: np.ndarray, mask: np.ndarray) -> dict:
    """How the episodes in ``mask`` ended (:func:`last_observations`; ``success``: as recorded):
    counts per category, recorded successes the last observation no longer shows (the chunk ran on
    after success), and the median offset of those left on the target off centre (cm)."""
    off = offset[mask & (cats == "on_target_off_centre")]
    return {"episodes": int(mask.sum()), "recorded_successes": int((mask & success).sum()),
            "ended": {c: int((mask & (cats == c)).sum()) for c in CATEGORIES},
            "success_not_at_end": int((mask & success & (cats != "goal")).sum()),
            "off_centre_median_cm": round(100 * float(np.median(off)), 2) if len(off) else None}


def episode_outcomes(store, sources: list[str] | None = None) -> list[dict]:
    """Per (suite, task, source) of the stored episodes (of ``sources``): :func:`outcome_summary`."""
    eps = [e for e in store.episodes if sources is None or e.source in sources]
    if not eps:
        return []
    cats, offset = last_observations(store, eps)
    success = np.array([e.success for e in eps])
    keys = [(e.suite, e.task_id, e.source) for e in eps]
    return [{"suite": suite, "task_id": task, "source": source,
             **outcome_summary(cats, offset, success, np.array([k == (suite, task, source) for k in keys]))}
            for suite, task, source in sorted(set(keys))]


def radius_in_pixels(suite: str, task_id: int, image_sizes: tuple[int, ...] = (128, 64),
                     init_state: int = 0) -> dict[int, float]:
    """How many pixels of the head camera (square, per size in ``image_sizes``) :data:`ONTOP_RADIUS`
    spans at the goal target's centre, in the task's ``init_state`` (mean of the table's x and y)."""
    from mbpo_ray.config import EnvConfig

    with LiberoEnv(EnvConfig(suite=suite, task_id=task_id, image_size=max(image_sizes))) as env:
        env.reset(init_state, render=False)
        centre = measure(env, env.raw.sim.get_state().flatten()).target_xyz
        pts = np.stack([centre, centre + [ONTOP_RADIUS, 0, 0], centre + [0, ONTOP_RADIUS, 0]])
        px = {s: head_pixels(env, pts, s) for s in image_sizes}
    return {s: float((np.linalg.norm(p[1] - p[0]) + np.linalg.norm(p[2] - p[0])) / 2) for s, p in px.items()}
