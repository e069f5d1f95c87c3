"""Replay store: round trip, atomic commits under a killed writer, memory-mapped sampling, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from mbpo_ray.replay import EpisodeBuilder, ReplayError, ReplayStore, StoreSpec, frames
from tests.conftest import TINY, random_episode, random_obs


def test_round_trip_keeps_every_value(tmp_path):
    rng = np.random.default_rng(0)
    store = ReplayStore.create(str(tmp_path / "s"), TINY)
    written = []
    for k in range(4):
        batch, obs, acts = random_episode(rng, chunks=2 + k, task_id=k % 2, success=k != 3)
        store.append(batch)
        written.append((obs, acts))
    reopened = ReplayStore.open(str(tmp_path / "s"))
    info = reopened.info()
    assert info["episodes"] == 4 and info["transitions"] == 2 + 3 + 4 + 5
    assert info["env_steps"] == 14 * TINY.chunk_size and info["success_rate"] == 0.75
    assert info["tasks"] == {"libero_spatial/0": 2, "libero_spatial/1": 2}
    for k, (obs, acts) in enumerate(written):
        t = reopened.read_episode(k)
        assert t.num_rows == len(obs)
        np.testing.assert_array_equal(frames(t, "head", 16), np.stack([o.head for o in obs]))
        np.testing.assert_array_equal(frames(t, "wrist", 16), np.stack([o.wrist for o in obs]))
        proprio = np.stack(t.column("proprio").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(proprio, np.stack([o.proprio for o in obs]))
        got_actions = np.stack(t.column("actions").to_numpy(zero_copy_only=False)).reshape(len(obs), 4, 7)
        np.testing.assert_allclose(got_actions[:-1], np.stack(acts))
        assert t.column("is_last").to_pylist() == [False] * (len(obs) - 1) + [True]
        assert t.column("step").to_pylist() == [4 * i for i in range(len(obs))]
        assert reopened.read_episode(reopened.episodes[k].episode_id).equals(t)


def test_uri_and_non_local_filesystem(tmp_path):
    rng = np.random.default_rng(1)
    uri = "file://" + str(tmp_path / "uri_store")
    ReplayStore.create(uri, TINY).append(random_episode(rng)[0])
    assert ReplayStore.open(str(tmp_path / "uri_store")).info()["episodes"] == 1

    import fsspec  # installed with torch and huggingface_hub
    memfs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    store = ReplayStore.create("/bucket/store", TINY, filesystem=memfs)
    batch, obs, _ = random_episode(rng, chunks=3)
    store.append(batch)
    again = ReplayStore.open("/bucket/store", filesystem=memfs)
    np.testing.assert_array_equal(frames(again.read_episode(0), "head", 16)[0], obs[0].head)
    assert again.sample_start_states(5, np.random.default_rng(0)).num_rows == 5


def test_sampling_is_uniform_over_chunk_starts_and_per_task(tmp_path):
    rng = np.random.default_rng(2)
    store = ReplayStore.create(str(tmp_path / "s"), TINY)
    for k in range(6):
        store.append(random_episode(rng, chunks=1 + k, task_id=k % 3)[0])
    t = store.sample_start_states(3000, np.random.default_rng(0))
    assert not any(t.column("is_last").to_pylist())
    # 21 chunk starts in all: each episode is drawn in proportion to its number of chunks
    ids = t.column("episode_id").to_pylist()
    counts = np.array([ids.count(e.episode_id) for e in store.episodes])
    expected = 3000 * np.arange(1, 7) / 21
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    only = store.sample_start_states(50, np.random.default_rng(1), task_id=2)
    assert set(only.column("task_id").to_pylist()) == {2}
    # a drawn row is exactly that row of its episode
    row = t.slice(0, 1).to_pylist()[0]
    ep = store.read_episode(row["episode_id"]).to_pylist()[row["chunk_index"]]
    assert ep == row
    with pytest.raises(ReplayError, match="no start states for task 7"):
        store.sample_start_states(1, task_id=7)


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from tests.conftest import random_episode, TINY
    from mbpo_ray.replay import ReplayStore
    store = ReplayStore.create({path!r}, TINY)
    rng = np.random.default_rng(int(sys.argv[1]))
    n = 0
    while True:
        store.append(random_episode(rng, chunks=int(rng.integers(1, 40)))[0])
        n += 1
        print(n, flush=True)
    """
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_writer_killed_mid_append_leaves_readable_store(tmp_path, seed):
    path = str(tmp_path / "s")
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=os.getcwd(), path=path))
    proc = subprocess.Popen([sys.executable, str(script), str(seed)], stdout=subprocess.PIPE, text=True)
    committed = 0
    while committed < 5:
        committed = int(proc.stdout.readline())
    time.sleep(np.random.default_rng(seed).uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ReplayStore.open(path)
    n_eps = store.info()["episodes"]
    assert n_eps >= committed
    rows = sum(store.read_part(p).num_rows for p in range(store.info()["files"]))
    assert rows == len(store) == sum(e.rows for e in store.episodes)
    for e in store.episodes:
        assert store.read_episode(e.episode_id).column("is_last").to_pylist()[-1] is True


def test_batch_in_flight_is_ignored(tmp_path):
    """The two states a crash can leave: a half-written temp file, and data with no manifest entry."""
    rng = np.random.default_rng(3)
    path = tmp_path / "s"
    store = ReplayStore.create(str(path), TINY)
    store.append(random_episode(rng)[0])
    good = (path / "data").iterdir().__next__().read_bytes()
    (path / "data" / ".part-9-abc.arrow.x.tmp").write_bytes(good[: len(good) // 2])
    (path / "data" / "part-99999999999999999999-deadbeef.arrow").write_bytes(good)
    (path / "manifest" / ".part-99999999999999999999-deadbeef.json.y.tmp").write_text("{trunc")
    again = ReplayStore.open(str(path))
    assert again.info()["episodes"] == 1 and again.info()["files"] == 1
    again.append(random_episode(rng)[0])
    assert ReplayStore.open(str(path)).info()["episodes"] == 2


def test_two_writers_append_to_one_store(tmp_path):
    rng = np.random.default_rng(4)
    a = ReplayStore.create(str(tmp_path / "s"), TINY)
    b = ReplayStore.open(str(tmp_path / "s"))
    for _ in range(3):
        a.append(random_episode(rng)[0])
        b.append(random_episode(rng)[0])
    assert a.refresh().info()["episodes"] == 6 == b.refresh().info()["episodes"]


CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    import numpy as np
    from mbpo_ray.replay import ReplayStore
    from tests.conftest import random_episode
    writer = int(sys.argv[1])
    store = ReplayStore.open({path!r})
    rng = np.random.default_rng(writer)
    while time.time() < {start}:  # every writer starts at the same moment
        time.sleep(0.001)
    for i in range(6):
        store.append(random_episode(rng, task_id=writer, chunks=int(rng.integers(1, 8)))[0])
        store.refresh()
    print(len(store.episodes), flush=True)
    """
)


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    """Four processes append at the same time: every episode is there once and reads back whole, and
    every process that refreshed sees the same index as a fresh open."""
    path = str(tmp_path / "s")
    ReplayStore.create(path, TINY)
    script = tmp_path / "writer.py"
    script.write_text(CONCURRENT_WRITER.format(root=os.getcwd(), path=path, start=time.time() + 3.0))
    procs = [subprocess.Popen([sys.executable, str(script), str(w)], stdout=subprocess.PIPE, text=True)
             for w in range(4)]
    seen = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    store = ReplayStore.open(path)
    assert len(store.episodes) == 24 and len({e.episode_id for e in store.episodes}) == 24
    assert sorted(e.task_id for e in store.episodes) == sorted(list(range(4)) * 6)
    assert max(seen) == 24 and min(seen) >= 6  # the last writer saw everyone's parts
    for e in store.episodes:
        assert store.read_episode(e.episode_id).column("is_last").to_pylist()[-1] is True


def test_a_late_part_is_indexed_in_the_order_a_fresh_open_sees(tmp_path, monkeypatch):
    """A part another writer named earlier but committed later sorts before known ones: a refreshed
    store and a freshly opened one index (and sample) the same files the same way."""
    rng = np.random.default_rng(0)
    a = ReplayStore.create(str(tmp_path / "s"), TINY)
    b = ReplayStore.open(str(tmp_path / "s"))
    a.append(random_episode(rng, task_id=0)[0])
    a.append(random_episode(rng, task_id=1)[0])
    assert a.read_episode(0).column("task_id")[0].as_py() == 0  # a reader of part 0 is cached
    with monkeypatch.context() as m:  # writer b's clock lags: its part's name sorts first
        m.setattr(time, "time_ns", lambda: 1)
        b.append(random_episode(rng, task_id=2)[0])
    a.refresh()
    fresh = ReplayStore.open(str(tmp_path / "s"))
    assert [e.task_id for e in a.episodes] == [e.task_id for e in fresh.episodes] == [2, 0, 1]
    assert [e.part for e in a.episodes] == [0, 1, 2]
    draws = [s.sample_start_states(16, np.random.default_rng(3)) for s in (a, fresh)]
    assert draws[0].equals(draws[1])
    assert a.read_episode(0).column("task_id")[0].as_py() == 2  # the readers follow the new order


def test_clear_errors_and_nothing_overwritten(tmp_path):
    rng = np.random.default_rng(5)
    path = str(tmp_path / "s")
    store = ReplayStore.create(path, TINY)
    store.append(random_episode(rng)[0])
    before = sorted(os.listdir(tmp_path / "s" / "data"))

    big = StoreSpec(image_size=32, chunk_size=4)
    with pytest.raises(ReplayError, match=r"column 'head': expected fixed_size_list<item: uint8>\[768\]"):
        store.append(random_episode(rng, spec=big)[0])
    with pytest.raises(ReplayError, match="exists with .*image_size=16.*this run writes .*image_size=32"):
        ReplayStore.create(path, big)
    with pytest.raises(ReplayError, match="not a replay store"):
        ReplayStore.open(str(tmp_path / "nothing"))
    with pytest.raises(ReplayError, match=r"head frame has shape \(32, 32, 3\).*image_size=16"):
        EpisodeBuilder(TINY, suite="libero_spatial", task_id=0, instruction="x", source="demo").add_chunk(
            random_obs(rng, big), np.zeros((4, 7)), 0, False, False
        )
    with pytest.raises(ReplayError, match="source='sim' is not allowed: choose one of demo, real, imagined"):
        random_episode(rng, source="sim")
    assert sorted(os.listdir(tmp_path / "s" / "data")) == before

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.json").write_text("{not json")
    with pytest.raises(ReplayError, match="store.json is corrupt"):
        ReplayStore.open(str(tmp_path / "bad"))
    data_file = next((tmp_path / "s" / "data").iterdir())
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(ReplayError, match="missing or corrupt"):
        ReplayStore.open(path).read_episode(0)


SAMPLER = textwrap.dedent(
    """
    import sys, numpy as np
    from mbpo_ray.replay import ReplayStore
    def anon():  # private memory; mapped file pages are the OS page cache, shared and reclaimable
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon'):
                return int(line.split()[1]) * 1024
    store = ReplayStore.open(sys.argv[1])
    rng = np.random.default_rng(0)
    store.sample_start_states(8, rng)
    base, peak = anon(), 0
    for _ in range(20):
        t = store.sample_start_states(64, rng)
        peak = max(peak, anon())
        del t
    print(peak - base, store.info()['bytes'])
    """
)


def _make_store(path, episodes: int, spec: StoreSpec) -> None:
    rng = np.random.default_rng(6)
    store = ReplayStore.create(str(path), spec)
    batch = random_episode(rng, spec=spec, chunks=9)[0]
    for _ in range(episodes // 20):
        table = pa.Table.from_batches([batch] * 20)
        ids = pa.array([f"{i // 10:x}-{rng.integers(1 << 60):x}" for i in range(200)])
        store.append(table.set_column(0, "episode_id", pa.array([ids[i // 10].as_py() for i in range(200)])))


def test_sampling_memory_does_not_grow_with_store_size(tmp_path):
    spec = StoreSpec(image_size=64, chunk_size=4)
    small, large = tmp_path / "small", tmp_path / "large"
    _make_store(small, 100, spec)  # 1,000 rows, ~24 MB
    _make_store(large, 800, spec)  # 8,000 rows, ~197 MB
    script = tmp_path / "sampler.py"
    script.write_text(SAMPLER)
    grow, sizes = {}, {}
    for name, path in (("small", small), ("large", large)):
        out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, check=True)
        grow[name], size = map(int, out.stdout.split())
        sizes[name] = size
    # measured: ~5-7 MB of private memory for both, against 25 MB and 200 MB stores
    assert grow["large"] < sizes["large"] / 10, (grow, sizes)
    assert grow["large"] < 2 * grow["small"] + 16 * 2**20, grow
    assert json.loads((small / "store.json").read_text())["image_size"] == 64


def test_an_all_digit_episode_id_is_found_as_an_id(tmp_path):
    rng = np.random.default_rng(2)
    store = ReplayStore.create(str(tmp_path / "s"), TINY)
    for eid in ("a1", "0665264158114862"):  # a hex id with no letter in it
        batch = random_episode(rng, chunks=2)[0]
        store.append(pa.Table.from_batches([batch]).set_column(0, "episode_id", pa.array([eid] * batch.num_rows)))
    assert store.episode("0665264158114862").episode_id == "0665264158114862"
    assert store.episode("1").episode_id == "0665264158114862" and store.episode(0).episode_id == "a1"
    with pytest.raises(ReplayError, match="episode 5 out of range"):
        store.episode("5")
    with pytest.raises(ReplayError, match="no episode with id 'b2'"):
        store.episode("b2")


def test_merge_copies_every_episode_once_and_refuses_bad_input(tmp_path):
    from mbpo_ray.cli import main
    from mbpo_ray.replay.merge import merge_stores

    rng = np.random.default_rng(3)
    a, b = ReplayStore.create(str(tmp_path / "a"), TINY), ReplayStore.create(str(tmp_path / "b"), TINY)
    shared, _, _ = random_episode(rng, chunks=2, source="demo")
    a.append(shared)
    b.append(shared)  # the same episode id in both (as a run's store copies the demonstrations)
    for k in range(3):
        b.append(random_episode(rng, chunks=2 + k, success=k == 0, source="real")[0])
    r = merge_stores(str(tmp_path / "m"), {"a": a, "b": b})
    assert (r.episodes, r.duplicates) == (4, 1)
    merged = ReplayStore.open(str(tmp_path / "m"))
    assert merged.info()["sources"] == {"demo": 1, "real": 3} and merged.info()["transitions"] == 2 + 2 + 3 + 4
    for meta in b.episodes:
        assert merged.read_episode(meta.episode_id).equals(b.read_episode(meta.episode_id))
    with pytest.raises(ReplayError, match="exists"):  # never appended to or overwritten
        merge_stores(str(tmp_path / "m"), {"a": a})
    assert len(ReplayStore.open(str(tmp_path / "m")).episodes) == 4
    c = ReplayStore.create(str(tmp_path / "c"), StoreSpec(image_size=16, chunk_size=5))
    c.append(random_episode(rng, StoreSpec(image_size=16, chunk_size=5))[0])
    with pytest.raises(ReplayError, match="one spec"):
        merge_stores(str(tmp_path / "n"), {"a": a, "c": c})
    assert not (tmp_path / "n").exists() and not (tmp_path / ".n.merging").exists()
    assert main(["replay", "merge", str(tmp_path / "b"), str(tmp_path / "a"), "--out", str(tmp_path / "cli")]) == 0
    assert len(ReplayStore.open(str(tmp_path / "cli")).episodes) == 4
    r = merge_stores(str(tmp_path / "first3"), {"a": a, "b": b}, max_episodes=3)  # a prefix, in order
    assert (r.episodes, r.by_source) == (3, {"a": 1, "b": 2})
    assert [m.episode_id for m in ReplayStore.open(str(tmp_path / "first3")).episodes] == \
        [m.episode_id for m in b.episodes[:3]]
    with pytest.raises(ReplayError, match="max_episodes=0"):
        merge_stores(str(tmp_path / "none"), {"a": a}, max_episodes=0)


def _gripper_episode(closes_at: int | None, chunks: int = 4):
    """An episode whose gripper stays open (-1) except from action 2 of chunk ``closes_at`` on."""
    b = EpisodeBuilder(TINY, suite="libero_spatial", task_id=0, instruction="task 0", source="real")
    rng = np.random.default_rng(0)
    for c in range(chunks):
        a = rng.uniform(-1, 1, (TINY.chunk_size, TINY.action_dim)).astype(np.float32)
        a[:, -1] = -1.0
        if closes_at is not None and c >= closes_at:
            a[2 if c == closes_at else 0:, -1] = 1.0
        b.add_chunk(random_obs(rng, TINY), a, reward=0.0, success=False, done=c == chunks - 1)
    return b.finish(random_obs(rng, TINY))


def test_grasp_chunk_is_the_first_chunk_that_closes_the_gripper_and_old_manifests_get_it(tmp_path):
    store = ReplayStore.create(str(tmp_path / "s"), TINY)
    for closes_at in (2, 0, None):
        store.append(_gripper_episode(closes_at))
    assert [e.grasp_chunk for e in store.episodes] == [2, 0, -1]
    for entry in (tmp_path / "s" / "manifest").glob("*.json"):  # as a store written before the field
        manifest = json.loads(entry.read_text())
        manifest["episodes"] = [{k: v for k, v in ep.items() if k != "grasp_chunk"} for ep in manifest["episodes"]]
        entry.write_text(json.dumps(manifest))
    assert [e.grasp_chunk for e in ReplayStore.open(str(tmp_path / "s")).episodes] == [2, 0, -1]
