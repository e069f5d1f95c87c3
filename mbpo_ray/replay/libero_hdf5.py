"""Import the official LIBERO demonstration HDF5 layout into a replay store.

Layout (one file per task, ``<task_name>_demo.hdf5``)::

    data/                      attrs bddl_file_name, problem_info (JSON with language_instruction):
                               they name the task where the file name does not
    data/demo_i/actions        (T, 7) float
    data/demo_i/rewards        (T,)   sparse, 1 at success
    data/demo_i/dones          (T,)
    data/demo_i/states         (T, D) flattened MuJoCo states (optional)
    data/demo_i/obs/agentview_rgb    (T, S, S, 3) uint8, raw renderer orientation (upside down)
    data/demo_i/obs/eye_in_hand_rgb  (T, S, S, 3) uint8, same
    data/demo_i/obs/ee_pos (T, 3), ee_ori (T, 3), gripper_states (T, 2)

``obs[t]`` is observed before ``actions[t]``. The effect of the very last action is never observed
in the file, so that one action is dropped and the terminal row holds ``obs[T-1]``. Chunk
boundaries are aligned to the end: the last chunk ends at ``T-1`` and carries the demo's final
success (``dones[-1]``/``rewards[-1]``), every chunk is H actions long except the first, which holds
the remaining ``(T-1) mod H`` actions. So a successful chunk is never a short one (as in the live
env, see ``LiberoEnv.step_chunk``): its length cannot tell the world model that it succeeded.
Frames are rotated exactly as the live environment's frames (see ``mbpo_ray.envs.libero_env``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from mbpo_ray.envs.libero_env import Observation, upright
from mbpo_ray.replay.episode import steps_to_episode
from mbpo_ray.replay.schema import ReplayError
from mbpo_ray.replay.store import ReplayStore
from mbpo_ray.replay.video import resize_frames

REQUIRED = ("actions", "obs/agentview_rgb", "obs/eye_in_hand_rgb", "obs/ee_pos", "obs/ee_ori", "obs/gripper_states")


def task_from_filename(path: str) -> tuple[str, int] | None:
    """(suite, task id) whose LIBERO task name matches ``<task_name>_demo.hdf5``, if any."""
    from libero.libero import benchmark

    stem = re.sub(r"_demo$", "", Path(path).stem)
    suites = benchmark.get_benchmark_dict()
    for suite in SUITES:
        names = suites[suite]().get_task_names()
        if stem in names:
            return suite, names.index(stem)
    return None


SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def task_from_attrs(attrs) -> tuple[str, int] | None:
    """(suite, task id) from the ``data`` group's own attributes: the task's BDDL file
    (``.../bddl_files/<suite>/<task_name>.bddl``), else the instruction in ``problem_info``."""
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    bddl = attrs.get("bddl_file_name")
    if bddl is not None:
        bddl = Path(bddl.decode() if isinstance(bddl, bytes) else str(bddl))
        named = [bddl.parent.name] if bddl.parent.name in SUITES else []
        for suite in named + [x for x in SUITES if x not in named]:
            names = suites[suite]().get_task_names()
            if bddl.stem in names:
                return suite, names.index(bddl.stem)
    info = attrs.get("problem_info")
    if info is not None:
        import json

        try:
            text = json.loads(info.decode() if isinstance(info, bytes) else str(info)).get("language_instruction")
        except (ValueError, AttributeError):
            text = None
        if text:
            return task_from_instruction(text)
    return None


def task_from_instruction(text: str, suites: tuple[str, ...] = SUITES) -> tuple[str, int] | None:
    """(suite, task id) of the first suite (in ``suites`` order) with exactly one task of this
    instruction (case and surrounding blanks ignored); an instruction a suite's tasks share names none."""
    from libero.libero import benchmark

    bench = benchmark.get_benchmark_dict()
    for suite in suites:
        tasks = bench[suite]().tasks
        hits = [i for i, t in enumerate(tasks) if t.language.strip().lower() == text.strip().lower()]
        if len(hits) == 1:
            return suite, hits[0]
    return None


def _demo_batch(store: ReplayStore, demo, name: str, meta: dict) -> pa.RecordBatch:
    missing = [k for k in REQUIRED if k not in demo]
    if missing:
        raise ReplayError(f"{name}: missing datasets {missing}; expected the official LIBERO demo layout")
    actions = np.asarray(demo["actions"], dtype=np.float32)
    t_len = len(actions)
    if t_len < 2 or actions.shape[1] != store.spec.action_dim:
        raise ReplayError(f"{name}: actions have shape {actions.shape}; need (T>=2, {store.spec.action_dim})")
    size = store.spec.image_size
    head = resize_frames(np.asarray(demo["obs/agentview_rgb"]), size)
    wrist = resize_frames(np.asarray(demo["obs/eye_in_hand_rgb"]), size)
    proprio = np.concatenate(
        [np.asarray(demo["obs/ee_pos"]), np.asarray(demo["obs/ee_ori"]), np.asarray(demo["obs/gripper_states"])],
        axis=1,
    ).astype(np.float32)
    for key, arr in (("agentview_rgb", head), ("eye_in_hand_rgb", wrist), ("proprio", proprio)):
        if len(arr) != t_len:
            raise ReplayError(f"{name}: obs/{key} has {len(arr)} steps but actions have {t_len}")
    states = np.asarray(demo["states"]) if "states" in demo else None
    success = bool(np.asarray(demo["dones"])[-1]) if "dones" in demo else False
    if "rewards" in demo:
        success = success or bool(np.asarray(demo["rewards"])[-1] > 0)

    def obs(t: int) -> Observation:
        return Observation(head=upright(head[t]), wrist=upright(wrist[t]), proprio=proprio[t])

    return steps_to_episode(store.spec, obs, actions, success, states, source="demo", **meta)


def _open(path: str):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReplayError(f"{path}: not a readable HDF5 file ({exc})") from None
    if "data" not in f:
        f.close()
        raise ReplayError(f"{path}: no 'data' group; expected the official LIBERO demo layout")
    return f


def resolve_task(path: str, suite: str | None = None, task_id: int | None = None) -> tuple[str, int]:
    """(suite, task id) of a demo file: as given, else from its file name, else from its attributes
    (the file is opened either way: an unreadable one fails here)."""
    with _open(path) as f:
        if suite is not None and task_id is not None:
            return suite, task_id
        found = task_from_filename(path) or task_from_attrs(f["data"].attrs)
    if found is None:
        raise ReplayError(f"{path}: cannot tell the LIBERO task from the file name nor from the file's "
                          "bddl_file_name / problem_info attributes; pass --suite and --task")
    return (suite or found[0]), (found[1] if task_id is None else task_id)


def iter_hdf5_episodes(
    store: ReplayStore, path: str, suite: str | None = None, task_id: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield one record batch per demo in ``path`` (episodes in demo index order)."""
    suite, task_id = resolve_task(path, suite, task_id)
    with _open(path) as f:
        data = f["data"]
        from mbpo_ray.envs.libero_env import task_info

        instruction = task_info(suite, task_id)[1]  # the benchmark's wording, as the live env uses
        demos = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not demos:
            raise ReplayError(f"{path}: 'data' holds no demo_i groups")
        meta = dict(suite=suite, task_id=task_id, instruction=instruction)
        for k in demos:
            yield _demo_batch(store, data[k], f"{path}:data/{k}", meta)
