"""Imagined batches kept for a run with the same inputs (``mbpo.batch_cache``): the null control reads
its method's batch instead of imagining it again."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np

from mbpo_ray.cli import main
from mbpo_ray.config import build_config
from mbpo_ray.protocol import Versions
from mbpo_ray.replay import ReplayStore
from mbpo_ray.rl.batch_cache import batch_key, imagine_cached, load_batch, save_batch
from mbpo_ray.rl.synthetic import acted_branches
from tests.rl.test_loop import SMALL


def _same(a, b) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif x != y:
            return False
    return True


def test_a_kept_batch_reads_back_as_it_was(loop_inputs, tmp_path):
    _, _, policy, _ = loop_inputs
    br = acted_branches(policy, {0: 1, 2: 0})
    br.start_ids, br.to_go, br.world_model_version = [f"ep{i}:0" for i in range(4)], np.arange(4), 3
    save_batch(tmp_path / "k.npz", br)
    assert _same(load_batch(tmp_path / "k.npz"), br) and load_batch(tmp_path / "other.npz") is None
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no half-written file left beside it

    calls = []

    def imagine():
        calls.append(1)
        return [type("R", (), {"branches": br})()], {"seconds": 5.0, "redone_shares": 0, "workers": 2,
                                                       "sync_seconds": 0.0}

    first = imagine_cached(imagine, tmp_path / "c" / "key.npz", Versions())
    again = imagine_cached(imagine, tmp_path / "c" / "key.npz", Versions())
    assert len(calls) == 1 and (first[1]["cached"], again[1]["cached"]) == (0, 1)
    assert _same(again[0][0].branches, br)
    imagine_cached(imagine, None, Versions())  # no path: imagined every time, nothing kept
    imagine_cached(imagine, None, Versions())
    assert len(calls) == 3 and len(list((tmp_path / "c").iterdir())) == 1


def test_a_batch_is_named_by_everything_it_depends_on(loop_inputs, tmp_path):
    _, store_path, policy, wm = loop_inputs
    store = ReplayStore.open(store_path)
    parts = tuple(store.part_names)

    def key(overrides=None, policy_dir=policy, seed=7, versions=None, parts=parts):
        cfg = build_config(overrides={"mbpo": {"objective": "bc", "batch_cache": "cache", **(overrides or {})}})
        path = batch_key(cfg.to_dict(), policy_dir, wm, store, parts, seed, versions or Versions())
        return path and path.name

    base = key()
    assert key({"batch_cache": ""}) is None  # no cache: nothing named
    assert base == key({"null_control": True, "batch_cache": "elsewhere"})  # what only the learner reads
    assert base != key({"branches": 16}) and base != key({"n_chunks": 4}) and base != key(seed=8)
    assert base != key(parts=parts[:-1])
    assert key(versions=Versions(1, 0)) is None and key(versions=Versions(0, 1)) is None  # the run's own weights
    other = tmp_path / "policy"
    shutil.copytree(policy, other)
    assert key(policy_dir=str(other)) == base  # the same files elsewhere
    (other / "policy.json").write_text((other / "policy.json").read_text() + " ")
    assert key(policy_dir=str(other)) != base


def test_the_null_control_reads_its_method_s_batch(ray_cluster, loop_inputs, tmp_path, capsys):
    _, shared, policy, wm = loop_inputs
    cache = tmp_path / "batches"
    common = ["--policy", policy, "--world-model", wm, "--mbpo.tasks=0", "--mbpo.branches=4", "--mbpo.n_chunks=2",
              "--mbpo.learners=1", "--mbpo.objective=bc", "--mbpo.max_staleness=0", "--mbpo.real_every=0",
              "--mbpo.eval_episodes=0", "--mbpo.minibatch_size=4", "--mbpo.updates_per_batch=1",
              "--mbpo.iterations=2", f"--mbpo.batch_cache={cache}", "--world_model.engine=hf", *SMALL]
    logs = {}
    for name, null in (("method", "false"), ("null", "true")):
        store = tmp_path / f"store_{name}"  # each run on its own copy of the same data
        shutil.copytree(shared, store)
        out = tmp_path / name
        code = main(["train", *common, "--store", str(store), "--out", str(out), f"--mbpo.null_control={null}"])
        assert code == 0, capsys.readouterr().err
        logs[name] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # the first batch (the starting weights) is kept by the method and read by its null control; the
    # second is imagined on each run's own weights, and not kept
    assert [x["imagine/cached"] for x in logs["method"]] == [0, 0]
    assert [x["imagine/cached"] for x in logs["null"]] == [1, 0]
    assert logs["null"][0]["imagine/chunk_transitions"] == logs["method"][0]["imagine/chunk_transitions"]
    assert len(list(cache.glob("*.npz"))) == 1
