"""Import of the official LIBERO demo HDF5 layout, on a file written here in exactly that layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from mbpo_ray.cli import main
from mbpo_ray.envs.libero_env import upright
from mbpo_ray.replay import ReplayError, ReplayStore, frames

TASK0 = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
S = 32


def upright_frame(t: int, wrist: bool) -> np.ndarray:
    """A frame whose orientation can be checked: a bright block in the top-left corner."""
    f = np.full((S, S, 3), 40 + t, dtype=np.uint8)
    f[:8, :4] = 255 if not wrist else 200
    return f


def write_libero_hdf5(path, lengths=(23, 17), bddl: str | None = f"libero/bddl_files/libero_spatial/{TASK0}.bddl",
                      instruction: str = "pick the akita black bowl") -> list[dict]:
    """Official layout; frames stored as the simulator renders them (upside down)."""
    rng = np.random.default_rng(0)
    demos = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
        if bddl is not None:
            data.attrs["bddl_file_name"] = bddl
        for i, t_len in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            actions = rng.uniform(-1, 1, (t_len, 7)).astype(np.float64)
            dones = np.zeros(t_len, dtype=np.uint8)
            dones[-1] = 1
            g.create_dataset("actions", data=actions)
            g.create_dataset("rewards", data=dones.astype(np.float64))
            g.create_dataset("dones", data=dones)
            g.create_dataset("states", data=rng.standard_normal((t_len, 92)))
            raw = lambda w, n=t_len: np.stack([upright(upright_frame(t, w)) for t in range(n)])  # noqa: E731
            g.create_dataset("obs/agentview_rgb", data=raw(False))
            g.create_dataset("obs/eye_in_hand_rgb", data=raw(True))
            g.create_dataset("obs/ee_pos", data=rng.standard_normal((t_len, 3)))
            g.create_dataset("obs/ee_ori", data=rng.standard_normal((t_len, 3)))
            g.create_dataset("obs/gripper_states", data=rng.standard_normal((t_len, 2)))
            g.create_dataset("obs/joint_states", data=rng.standard_normal((t_len, 7)))
            g.create_dataset("obs/ee_states", data=rng.standard_normal((t_len, 6)))
            demos.append({"actions": actions, "states": np.asarray(g["states"]), "T": t_len,
                          "ee_pos": np.asarray(g["obs/ee_pos"])})
    return demos


def test_import_official_layout(tmp_path, capsys):
    src = tmp_path / f"{TASK0}_demo.hdf5"
    demos = write_libero_hdf5(src)
    out = str(tmp_path / "store")
    assert main(["import-libero-hdf5", str(src), "--out", out, "--image-size", str(S)]) == 0
    store = ReplayStore.open(out)
    assert [e.task_id for e in store.episodes] == [0, 0] and store.episodes[0].suite == "libero_spatial"
    for k, demo in enumerate(demos):
        t = store.read_episode(k)
        t_len = demo["T"]
        # boundaries aligned to the end: only the first chunk may be short, the successful last one is full
        r = (t_len - 1) % 10
        starts = ([0] if r else []) + list(range(r, t_len - 1, 10))
        assert t.num_rows == len(starts) + 1
        assert t.column("step").to_pylist() == starts + [t_len - 1]
        head = frames(t, "head", S)
        # stored the right way up: the marker is back in the top-left corner
        assert (head[:, :8, :4] == 255).all() and (head[:, -8:, -4:] < 255).all()
        assert (frames(t, "wrist", S)[:, :8, :4] == 200).all()
        np.testing.assert_array_equal(head[:, S // 2, S // 2, 0], 40 + np.array(starts + [t_len - 1]))
        acts = np.stack(t.column("actions").to_numpy(zero_copy_only=False)).reshape(-1, 10, 7)
        n = t.column("num_actions").to_pylist()
        assert sum(n) == t_len - 1 and n[-2] == 10 and all(x == 10 for x in n[1:-1])
        got = np.concatenate([acts[i, : n[i]] for i in range(len(starts))])
        np.testing.assert_allclose(got, demo["actions"][: t_len - 1], rtol=1e-6)
        proprio = np.stack(t.column("proprio").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(proprio[:, :3], demo["ee_pos"][starts + [t_len - 1]], rtol=1e-5)
        sim = t.column("sim_state").to_pylist()
        np.testing.assert_allclose(sim[0], demo["states"][0])
        assert t.column("success").to_pylist() == [False] * (len(starts) - 1) + [True, True]
        assert t.column("instruction")[0].as_py().startswith("pick up the black bowl between")
    assert main(["replay", "info", out]) == 0
    assert "episodes      2" in capsys.readouterr().out


def test_import_errors(tmp_path, capsys):
    bad = tmp_path / "not_a_libero_task_demo.hdf5"
    write_libero_hdf5(bad, bddl="elsewhere/no_such_task.bddl")
    assert main(["import-libero-hdf5", str(bad), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the LIBERO task from the file name nor from the file's bddl_file_name" in err
    assert "pass --suite and --task" in err and not (tmp_path / "s" / "store.json").exists()
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"this is not hdf5")
    assert main(["import-libero-hdf5", str(broken), "--out", str(tmp_path / "s2"), "--suite",
                 "libero_spatial", "--task", "0"]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err and not (tmp_path / "s2").exists()
    with h5py.File(tmp_path / "missing.hdf5", "w") as f:
        f.create_group("data/demo_0").create_dataset("actions", data=np.zeros((5, 7)))
    from mbpo_ray.replay import StoreSpec
    from mbpo_ray.replay.libero_hdf5 import iter_hdf5_episodes

    store = ReplayStore.create(str(tmp_path / "s3"), StoreSpec(image_size=S))
    with pytest.raises(ReplayError, match=r"missing datasets \['obs/agentview_rgb'"):
        list(iter_hdf5_episodes(store, str(tmp_path / "missing.hdf5"), "libero_spatial", 0))


def test_a_file_with_any_name_is_imported_through_its_attributes(tmp_path):
    """The task comes from data.attrs when the file name does not tell it: the BDDL file name, else
    the instruction in problem_info."""
    from mbpo_ray.envs.libero_env import task_info

    by_bddl = tmp_path / "episodes_2024.hdf5"
    write_libero_hdf5(by_bddl, lengths=(12,))
    # libero_object task 3 named only by its instruction (and a BDDL path that names nothing)
    by_text = tmp_path / "recording.hdf5"
    write_libero_hdf5(by_text, lengths=(12,), bddl=None, instruction=task_info("libero_object", 3)[1])
    for src, suite, task in ((by_bddl, "libero_spatial", 0), (by_text, "libero_object", 3)):
        out = str(tmp_path / f"store_{src.stem}")
        assert main(["import-libero-hdf5", str(src), "--out", out, "--image-size", str(S)]) == 0
        (e,) = ReplayStore.open(out).episodes
        assert (e.suite, e.task_id) == (suite, task)
