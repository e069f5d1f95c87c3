"""A run folder survives a crash at any point of its checkpoint swap, resumes with its own config, and
logs each iteration once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbpo_ray.config import build_config
from mbpo_ray.resume import recover_checkpoint, resume_config, swap_checkpoint, trim_metrics, write_state


def checkpoint(folder: Path, iteration: int) -> None:
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_text(f"weights of iteration {iteration}")
    write_state(folder, {"iteration": iteration})


def iteration_of(run: Path) -> int:
    return json.loads((run / "checkpoint" / "state.json").read_text())["iteration"]


def test_swap_keeps_a_checkpoint_through_a_crash_between_its_renames(tmp_path, monkeypatch):
    checkpoint(tmp_path / "checkpoint", 1)
    checkpoint(tmp_path / "checkpoint.tmp", 2)
    real = Path.rename
    calls = []

    def crash_on_second(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        swap_checkpoint(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint").exists()  # the moment the old swap lost the run
    recover_checkpoint(tmp_path)
    assert iteration_of(tmp_path) == 2
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.prev").exists()


def test_recover_picks_the_newest_complete_checkpoint(tmp_path):
    checkpoint(tmp_path / "checkpoint.prev", 1)
    (tmp_path / "checkpoint.tmp").mkdir()  # crashed while writing it: no state.json
    (tmp_path / "checkpoint.tmp" / "weights.bin").write_text("half")
    recover_checkpoint(tmp_path)
    assert iteration_of(tmp_path) == 1 and not (tmp_path / "checkpoint.tmp").exists()
    checkpoint(tmp_path / "checkpoint.tmp", 2)
    swap_checkpoint(tmp_path)
    assert iteration_of(tmp_path) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    (tmp_path / "checkpoint.tmp").mkdir()
    with pytest.raises(RuntimeError, match="not a complete checkpoint"):
        swap_checkpoint(tmp_path)
    assert iteration_of(tmp_path) == 2


def test_resume_runs_with_the_config_the_run_was_started_with(tmp_path):
    started = build_config(None, {"mbpo": {"n_chunks": 4, "objective": "bc", "iterations": 2}})
    (tmp_path / "run.json").write_text(json.dumps({"policy": "p", "world_model": "w", "store": "s",
                                                   "config": started.to_dict()}))
    cfg, changed = resume_config(tmp_path, None, {"mbpo": {"iterations": 5}})
    assert (cfg.mbpo.n_chunks, cfg.mbpo.objective, cfg.mbpo.iterations) == (4, "bc", 5)
    assert changed == ["mbpo.iterations 2 -> 5"]
    cfg, changed = resume_config(tmp_path, None, {})
    assert cfg == started and changed == []
    with pytest.raises(FileNotFoundError, match="no run.json"):
        resume_config(tmp_path / "elsewhere", None, {})


def test_trim_metrics_drops_the_rows_a_resume_logs_again(tmp_path):
    rows = [{"iteration": i, "x": i} for i in (0, 1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trim_metrics(tmp_path, 2) == 2
    kept = [json.loads(x)["iteration"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [0, 1, 2]
    assert trim_metrics(tmp_path / "none", 2) == 0
