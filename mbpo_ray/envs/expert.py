"""Scripted pick-and-place expert that reads privileged simulator state.

The expert emits the same 7-dim action a teleoperator would: an OSC pose delta (3 translation,
3 rotation, each in [-1, 1]) and a gripper command (-1 open, +1 close). It is a state machine over
waypoints:

``approach`` (above the grasp point) -> ``descend`` -> ``grasp`` (close for a fixed number of
steps) -> ``lift`` -> ``carry`` (the *object's* measured position over the target) -> ``lower``
-> ``release`` -> ``retreat`` -> ``done``.

A missed grasp (fingers closed on nothing, or the object not rising or not staying with the hand)
reopens the gripper and starts again from ``approach`` with the next best grasp pose.

Grasp poses come from the object's own collision geometry, read fresh from the simulator each
step. Wide objects (bowls) are taken by the rim, with the wall across the fingers' closing axis;
narrow objects from above, across their narrowest horizontal width. The hand's yaw (and the rim
side) is chosen once per attempt: the least rotation whose open gripper, modelled as spheres,
clears every other object (drawer walls, cabinets, neighbours). The integral term of the position
command pushes through steady offsets the way a person keeps pushing a stuck arm.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from mbpo_ray.config import ExpertConfig
from mbpo_ray.envs.goal_state import goal_of
from mbpo_ray.envs.libero_env import EnvError, LiberoEnv

# Geometry and timing constants (metres / env steps), measured on LIBERO with the Panda gripper.
WIDE_OBJECT = 0.075  # objects whose narrowest horizontal width exceeds this are grasped by the rim
RIM_GRIP_DEPTH = 0.018  # grasp point below the rim's top edge
TOP_GRIP_DEPTH = 0.03  # grasp point below a narrow object's top
MIN_GRIP_HEIGHT = 0.012  # never put the grasp point lower than this above the object's bottom
APPROACH_HEIGHT = 0.10  # approach waypoint above the grasp point
CARRY_CLEARANCE = 0.08  # object's bottom above the higher of its start and the target's top
PLACE_HEIGHT = 0.015  # object's bottom above the target's top when the lowering ends
CLOSE_STEPS = 14  # gripper closing steps before lifting
OPEN_STEPS = 6  # gripper opening steps after placing
GRIPPER_EMPTY = 0.005  # summed finger opening at or below this after closing means a miss
ROT_GAIN = 1.0  # rotation command per radian of orientation error (action 1 = 0.5 rad)
MIN_COMMAND = 0.25  # smallest translation command while outside the waypoint tolerance
MAX_RETRIES = 2
INTEGRAL_GAIN = 3.0  # integral command added per step per metre of error
INTEGRAL_MAX = 0.5
DROP_DISTANCE = 0.04  # the object moved this far relative to the hand while carried: dropped
YAW_CANDIDATES = (0, 15, -15, 30, -30, 45, -45, 60, -60, 75, -75, 90)  # hand yaws tried (degrees)
FINGER_OFFSET = 0.051  # finger centres either side of the grasp point when open
HAND_HALF_SPAN = 0.09  # the hand's half length along the closing axis
HAND_ABOVE_GRASP = 0.04  # the hand's underside above the grasp point
FINGER_CLEARANCE = 0.01  # gap around the gripper that counts as free
YAW_PENALTY = 0.002  # metres of clearance traded per radian of yaw
REACH_PENALTY = 0.02  # metres of clearance traded per metre from the robot's base
ROBOT_BASE = "robot0_base"
DESCENT_SLOPE = 1.0  # while carrying, height above the place point per metre of xy distance

PHASES = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat", "done")
SUPPORTED_RELATIONS = ("on", "in")


def parse_goal(env: LiberoEnv) -> tuple[str, str, str]:
    """(relation, object, target) of a single pick-and-place goal, or raise :class:`EnvError`."""
    relation, obj, target = goal_of(env)
    if relation not in SUPPORTED_RELATIONS:
        raise EnvError(f"scripted expert supports one goal ('on'|'in', object, target); the task's relation is "
                       f"{relation!r}")
    if target not in env.raw.obj_body_id and target not in env.raw.sim.model.site_names:
        raise EnvError(f"goal target {target!r} is neither an object nor a region site of this task")
    return relation, obj, target


def _body_geoms(model, body_id: int) -> list[int]:
    """Collision geoms of a body and all bodies below it."""
    below = {body_id}
    for b in range(model.nbody):
        parent = b
        while parent not in below and parent != 0:
            parent = model.body_parentid[parent]
        if parent in below:
            below.add(b)
    collide = model.geom_contype.astype(bool) | model.geom_conaffinity.astype(bool)
    return [g for g in range(model.ngeom) if model.geom_bodyid[g] in below and collide[g]]


def _geom_boxes(sim, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """World centres (N, 3) and world half-extents (N, 3) of box-like geoms."""
    centres = np.array([sim.data.geom_xpos[g] for g in geoms])
    halves = []
    for g in geoms:
        rot = sim.data.geom_xmat[g].reshape(3, 3)
        size = np.asarray(sim.model.geom_size[g], dtype=np.float64)
        if sim.model.geom_type[g] in (2, 3, 5):  # sphere, capsule, cylinder: radius, half-length
            size = np.array([size[0], size[0], size[1] if sim.model.geom_type[g] != 2 else size[0]])
        halves.append(np.abs(rot) @ size)
    return centres, np.array(halves)


class ScriptedExpert:
    """Waypoint state machine for one-object pick-and-place, with Gaussian translation noise."""

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self._phase = "done"
        self.relation = self.obj = self.target = ""

    @property
    def phase(self) -> str:
        return self._phase

    def reset(self, env: LiberoEnv) -> None:
        """Read the goal and the settled hand pose; start at ``approach``."""
        self.relation, self.obj, self.target = parse_goal(env)
        sim = env.raw.sim
        self._obj_geoms = _body_geoms(sim.model, env.raw.obj_body_id[self.obj])
        if not self._obj_geoms:
            raise EnvError(f"object {self.obj!r} has no collision geometry")
        self._base_quat = np.array(env.raw._observables["robot0_eef_quat"].obs, dtype=np.float64)
        self._hold_quat = self._base_quat
        self._retries = 0
        self._enter("approach")
        self._hist, self._tried = [], set()
        self._start_z = self._eef(env)[2]
        self._start_bottom = self._object_box(env)[0][2]
        self._choose_grasp(env)
        self._grasp = self._grasp_point(env)
        self._hang = np.zeros(3)  # object position minus hand position while carried
        self._carry_z = 0.0

    def act(self, env: LiberoEnv) -> np.ndarray:
        """One action (7,) in [-1, 1] for the current state; advances the phase."""
        target, gripper = self._step_phase(env)
        eef = self._eef(env)
        if target is None:
            move = np.zeros(3)
        else:
            err = target - eef
            # Integral term: push harder against a steady offset (gravity, posture), as a person would.
            self._integral = np.clip(self._integral + INTEGRAL_GAIN * err, -INTEGRAL_MAX, INTEGRAL_MAX)
            move = self.cfg.gain * err + self._integral
            norm = np.linalg.norm(move)
            floor = MIN_COMMAND if np.linalg.norm(err) > self.cfg.waypoint_tolerance / 2 else 0.0
            if 0 < norm < floor:
                move *= floor / norm
            move = np.clip(move, -1.0, 1.0)
        if self.cfg.noise_std > 0:
            move = move + self.rng.normal(0.0, self.cfg.noise_std, size=3)
        action = np.concatenate([move, self._rotation(env), [gripper]])
        return np.clip(action, -1.0, 1.0)

    def _enter(self, phase: str) -> None:
        self._phase, self._count = phase, 0
        self._integral = np.zeros(3)

    def _step_phase(self, env: LiberoEnv) -> tuple[np.ndarray | None, float]:
        """Waypoint (hand position, or None to hold still) and gripper command of this step."""
        eef, tol = self._eef(env), self.cfg.waypoint_tolerance
        self._count += 1
        if self._phase == "approach":
            self._grasp = self._grasp_point(env)
            goal = self._grasp + [0.0, 0.0, APPROACH_HEIGHT]
            xy_err = np.linalg.norm(goal[:2] - eef[:2])
            goal[2] += np.clip(xy_err - 2 * tol, 0.0, max(self._start_z - goal[2], 0.0))
            if xy_err < tol and abs(goal[2] - eef[2]) < 2 * tol:
                self._enter("descend")
            return goal, -1.0
        if self._phase == "descend":
            self._grasp = self._grasp_point(env)
            if np.linalg.norm(self._grasp - eef) < tol / 2 or self._stalled(eef):
                self._enter("grasp")
            return self._grasp, -1.0
        if self._phase == "grasp":
            if self._count >= CLOSE_STEPS:
                self._after_close(env)
            return None, 1.0
        if self._phase == "lift":
            goal = np.array([*self._grasp[:2], self._carry_z])
            if self._count > 4 and self._object_box(env)[0][2] < self._start_bottom + 0.01 and self._stalled(eef):
                self._miss(env)
            elif eef[2] > self._carry_z - tol:
                self._hang = self._object_pos(env) - eef
                self._enter("carry")
            return goal, 1.0
        if self._phase in ("carry", "lower") and self._dropped(env, eef):
            self._miss(env)
            return None, -1.0
        if self._phase == "carry":
            offset = self._placement_error(env, inside=False)
            xy_err = np.linalg.norm(offset[:2])
            if xy_err < tol / 2 and self._count > 3:
                self._enter("lower")
            return eef + offset + [0.0, 0.0, min(self._carry_extra, DESCENT_SLOPE * xy_err)], 1.0
        if self._phase == "lower":
            offset = self._placement_error(env)
            goal = eef + offset
            if env.success or offset[2] > -0.004 or (self._count > 5 and self._stalled(eef)):
                self._enter("release")
            return goal, 1.0
        if self._phase == "release":
            if self._count >= OPEN_STEPS:
                self._retreat_goal = eef + [0.0, 0.0, APPROACH_HEIGHT]
                self._enter("retreat")
            return None, -1.0
        if self._phase == "retreat":
            if np.linalg.norm(self._retreat_goal - eef) < tol:
                self._enter("done")
            return self._retreat_goal, -1.0
        return None, -1.0

    def _after_close(self, env: LiberoEnv) -> None:
        """After closing: a miss restarts the approach, a hold sets the carry height and lifts."""
        opening = float(np.sum(np.abs(env.raw._observables["robot0_gripper_qpos"].obs)))
        if opening <= GRIPPER_EMPTY:
            self._miss(env)
            return
        bottom = self._object_box(env)[0][2]
        _, target_top = self._target_xy_top(env)
        clear_bottom = max(self._start_bottom, target_top) + CARRY_CLEARANCE
        self._carry_z = self._eef(env)[2] + (clear_bottom - bottom)
        self._carry_extra = clear_bottom - (target_top + PLACE_HEIGHT)
        self._enter("lift")

    def _miss(self, env: LiberoEnv) -> None:
        """Open and start again from ``approach``, with the next best grasp pose."""
        self._retries += 1
        self._enter("approach" if self._retries <= MAX_RETRIES else "done")
        self._choose_grasp(env)

    def _dropped(self, env: LiberoEnv, eef: np.ndarray) -> bool:
        """True when the object no longer moves with the hand."""
        return np.linalg.norm(self._object_pos(env) - eef - self._hang) > DROP_DISTANCE

    def _stalled(self, eef: np.ndarray, steps: int = 4, dist: float = 0.002) -> bool:
        """True when the hand moved less than ``dist`` over the last ``steps`` calls."""
        hist = getattr(self, "_hist", [])
        hist = [*hist[-(steps - 1):], eef.copy()] if steps > 1 else [eef.copy()]
        self._hist = hist
        return len(hist) == steps and np.linalg.norm(hist[-1] - hist[0]) < dist

    def _placement_error(self, env: LiberoEnv, inside: bool = True) -> np.ndarray:
        """How far the object must move: xy to the target's centre, z to its release height.

        'on' (or ``inside=False``): the object's bottom just above the target's top. 'in' a region
        (a basket): as deep as the hand can go while it stays above the container's rim, no lower
        than the region's floor.
        """
        target_xy, target_top = self._target_xy_top(env)
        pos = self._object_pos(env)
        bottom = self._object_box(env)[0][2]
        level = target_top + PLACE_HEIGHT
        if inside and self.target not in env.raw.obj_body_id:
            sim = env.raw.sim
            sid = sim.model.site_name2id(self.target)
            floor = sim.data.site_xpos[sid][2] - sim.model.site_size[sid][2] + PLACE_HEIGHT
            hand_floor = target_top + PLACE_HEIGHT - HAND_ABOVE_GRASP - (self._eef(env)[2] - bottom)
            level = min(level, max(floor, hand_floor))
        return np.array([*(target_xy - pos[:2]), level - bottom])

    def _object_pos(self, env: LiberoEnv) -> np.ndarray:
        return np.array(env.raw.sim.data.body_xpos[env.raw.obj_body_id[self.obj]])

    def _eef(self, env: LiberoEnv) -> np.ndarray:
        return np.array(env.raw._observables["robot0_eef_pos"].obs, dtype=np.float64)

    def _rotation(self, env: LiberoEnv) -> np.ndarray:
        """Rotation command that holds the hand's orientation from the start of the episode."""
        cur = Rotation.from_quat(env.raw._observables["robot0_eef_quat"].obs)
        err = (Rotation.from_quat(self._hold_quat) * cur.inv()).as_rotvec()
        return np.clip(ROT_GAIN * err, -1.0, 1.0)

    def _object_box(self, env: LiberoEnv) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box (low corner, high corner) of the goal object."""
        centres, halves = _geom_boxes(env.raw.sim, self._obj_geoms)
        return (centres - halves).min(axis=0), (centres + halves).max(axis=0)

    def _target_xy_top(self, env: LiberoEnv) -> tuple[np.ndarray, float]:
        """Centre (x, y) of the target and the height of its top surface."""
        raw, sim = env.raw, env.raw.sim
        if self.target in raw.obj_body_id:
            bid = raw.obj_body_id[self.target]
            centres, halves = _geom_boxes(sim, _body_geoms(sim.model, bid))
            return np.array(sim.data.body_xpos[bid][:2]), float((centres + halves)[:, 2].max())
        # A region site such as "basket_1_contain_region": its owner's top is the rim to clear.
        pos = np.array(sim.data.site_xpos[sim.model.site_name2id(self.target)])
        owners = [name for name in raw.obj_body_id if self.target.startswith(name + "_")]
        if not owners:
            return pos[:2], float(pos[2])
        owner = raw.obj_body_id[max(owners, key=len)]
        centres, halves = _geom_boxes(sim, _body_geoms(sim.model, owner))
        return pos[:2], float((centres + halves)[:, 2].max())

    def _grasp_point(self, env: LiberoEnv) -> np.ndarray:
        """Where the hand closes: on the rim for wide objects, around the top for narrow ones."""
        centres, halves = _geom_boxes(env.raw.sim, self._obj_geoms)
        low, high = (centres - halves).min(axis=0), (centres + halves).max(axis=0)
        mid = (low + high) / 2
        if self._narrow:
            z = max(high[2] - TOP_GRIP_DEPTH, low[2] + MIN_GRIP_HEIGHT)
            return np.array([mid[0], mid[1], z])
        return self._rim_point(centres, halves, mid, low[2], self._dir)

    @staticmethod
    def _rim_point(centres, halves, mid, bottom, direction) -> np.ndarray:
        """Grasp point on the rim geom whose radial direction best matches ``direction`` (xy)."""
        rel = centres[:, :2] - mid[:2]
        along = rel @ direction
        across = np.abs(rel @ np.array([-direction[1], direction[0]]))
        k = int(np.argmax(along - 2.0 * across))
        top = centres[k, 2] + halves[k, 2]
        return np.array([centres[k, 0], centres[k, 1], max(top - RIM_GRIP_DEPTH, bottom + MIN_GRIP_HEIGHT)])

    def _choose_grasp(self, env: LiberoEnv) -> None:
        """Pick the hand's yaw (and, for rims, the side) for the next grasp.

        Each candidate yaw is scored by the gripper's clearance from other objects (capped at
        ``FINGER_CLEARANCE``), less small penalties for yaw and for reach from the robot's base;
        poses already tried in this episode are skipped. Narrow objects are taken across their
        narrowest horizontal width; wide ones (bowls) by the rim. Sets ``_dir`` (xy unit vector
        along the closing axis, from the object's centre towards the grasp point for rims),
        ``_narrow`` and the held orientation.
        """
        sim = env.raw.sim
        hold = Rotation.from_quat(self._base_quat)
        axis = hold.as_matrix()[:2, 1] / np.linalg.norm(hold.as_matrix()[:2, 1])
        centres, halves = _geom_boxes(sim, self._obj_geoms)
        low, high = (centres - halves).min(axis=0), (centres + halves).max(axis=0)
        mid = (low + high) / 2
        corners = _box_corners(*_obstacle_boxes(sim, self._obj_geoms))[:, :2]
        obstacles = _obstacle_boxes(sim, [g for name, bid in env.raw.obj_body_id.items()
                                          if name != self.obj for g in _body_geoms(sim.model, bid)])
        base = sim.data.body_xpos[sim.model.body_name2id(ROBOT_BASE)][:2]
        candidates = []
        for yaw in np.deg2rad(YAW_CANDIDATES):
            c, s = np.cos(yaw), np.sin(yaw)
            u = np.array([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1]])
            width = float(np.ptp(corners @ u))
            candidates += [(yaw, side, side * u, width) for side in (1.0, -1.0)]
        self._narrow = min(w for *_, w in candidates) <= WIDE_OBJECT
        best = (-np.inf, 0.0, axis, 1.0)
        for yaw, side, u, width in candidates:
            if self._narrow and (side < 0 or width > WIDE_OBJECT):
                continue
            if self._narrow:
                p = np.array([mid[0], mid[1], max(high[2] - TOP_GRIP_DEPTH, low[2] + MIN_GRIP_HEIGHT)])
            else:
                p = self._rim_point(centres, halves, mid, low[2], u)
            room = min(_clearance(obstacles, p, u), FINGER_CLEARANCE)
            score = room - YAW_PENALTY * abs(yaw) - REACH_PENALTY * np.linalg.norm(p[:2] - base)
            if score > best[0] and (yaw, side) not in self._tried:
                best = (score, yaw, u, side)
        _, yaw, self._dir, side = best
        self._tried.add((yaw, side))
        self._hold_quat = (Rotation.from_rotvec([0.0, 0.0, yaw]) * hold).as_quat()


def _box_corners(centres: np.ndarray, rots: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """World corners (8 N, 3) of oriented boxes."""
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    local = signs[None, :, :] * sizes[:, None, :]  # (N, 8, 3)
    return (centres[:, None, :] + np.einsum("nij,nkj->nki", rots, local)).reshape(-1, 3)


def _gripper_spheres(grasp: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spheres (centres (N, 3), radii (N,)) covering the open hand and fingers at ``grasp``.

    ``direction`` is the unit xy vector along the fingers' closing axis, pointing at the outer
    finger. Sizes follow the Panda hand's collision meshes around the grip site.
    """
    u = np.array([direction[0], direction[1], 0.0])
    centres, radii = [], []
    for along in np.linspace(-HAND_HALF_SPAN, HAND_HALF_SPAN, 7):
        for dz in (0.07, 0.10):
            centres.append(grasp + along * u + [0.0, 0.0, dz])
            radii.append(0.03)
    for side in (1.0, -1.0):
        for dz in (0.0, 0.025, 0.05):
            centres.append(grasp + side * FINGER_OFFSET * u + [0.0, 0.0, dz])
            radii.append(0.012)
    return np.array(centres), np.array(radii)


def _clearance(boxes: tuple[np.ndarray, ...], grasp: np.ndarray, direction: np.ndarray) -> float:
    """Smallest gap between the open gripper at ``grasp`` and any obstacle box (negative: overlap)."""
    centres, rots, sizes = boxes
    if len(centres) == 0:
        return np.inf
    points, radii = _gripper_spheres(grasp, direction)
    rel = points[None, :, :] - centres[:, None, :]  # (G, P, 3)
    local = np.abs(np.einsum("gji,gpj->gpi", rots, rel)) - sizes[:, None, :]
    outside = np.linalg.norm(np.maximum(local, 0.0), axis=-1) + np.minimum(local.max(axis=-1), 0.0)
    return float((outside - radii[None, :]).min())


def _obstacle_boxes(sim, geoms: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oriented boxes (centres, rotations, half sizes) of geoms; non-boxes by bounding cubes."""
    centres = np.array([sim.data.geom_xpos[g] for g in geoms]).reshape(-1, 3)
    rots = np.array([sim.data.geom_xmat[g].reshape(3, 3) for g in geoms]).reshape(-1, 3, 3)
    sizes = np.array([
        sim.model.geom_size[g] if sim.model.geom_type[g] == 6 else np.full(3, sim.model.geom_rbound[g])
        for g in geoms
    ]).reshape(-1, 3)
    return centres, rots, sizes
