"""Config: validated at construction, YAML + dotted overrides, one clear message per bad value."""

from __future__ import annotations

import pytest

from mbpo_ray.cli import main
from mbpo_ray.config import Config, ConfigError, EnvConfig, build_config, parse_overrides


def test_defaults_and_overrides(tmp_path):
    cfg = build_config()
    assert cfg == Config(cache_dir=cfg.cache_dir)
    assert cfg.env.horizon == 220 and cfg.env.chunk_size == 10 and cfg.env.settle_steps == 10
    y = tmp_path / "c.yaml"
    y.write_text("env:\n  suite: libero_10\n  image_size: 64\ncollect:\n  workers: 3\n")
    cfg = build_config(y, ["--env.image_size=96", "expert.noise_std=0.1"])
    assert (cfg.env.suite, cfg.env.image_size, cfg.collect.workers) == ("libero_10", 96, 3)
    assert cfg.expert.noise_std == 0.1 and cfg.env.horizon == 520
    assert build_config(overrides=["--mbpo.actor_lr=1e-3"]).mbpo.actor_lr == 1e-3  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(dataclasses_error()):
        cfg.env.suite = "x"  # frozen


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--env.suite=libero_100"], "env.suite='libero_100' is not allowed: choose one of libero_spatial, "
                                     "libero_object, libero_goal, libero_10, libero_90"),
        (["--env.task_id=12"], "env.task_id=12 is not allowed: must lie in [0, 9]"),
        (["--env.image_size=big"], "env.image_size='big' is not allowed: must be an integer"),
        (["--collect.workers=0"], "collect.workers=0 is not allowed: must lie in [1, 512]"),
        (["--env.colour=red"], "unknown field env.colour; allowed fields: chunk_size, image_size,"),
        (["--expert.noise_std=true"], "expert.noise_std=True is not allowed: must be a number"),
        (["--mbpo.actor_lr=fast"], "mbpo.actor_lr='fast' is not allowed: must be a number"),
        (["env.suite"], "override 'env.suite' must look like --section.field=value"),
        (["--collect.keep_failures=3"], "collect.keep_failures=3 is not allowed: must be true or false"),
        (["--mbpo.policy_temperature=0"], "mbpo.policy_temperature=0.0 is not allowed: must lie in [0.05, 10.0]"),
        (["--mbpo.mode=dream"], "mbpo.mode='dream' is not allowed: choose one of mbpo, online, simulator"),
        (["--mbpo.mode=simulator", "--mbpo.wm_finetune_every=2"], "mbpo.mode=simulator has no world model to finetune"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=overrides)
    assert message in str(err.value)


def test_task_range_depends_on_suite():
    assert EnvConfig(suite="libero_90", task_id=89).task_id == 89
    with pytest.raises(ConfigError, match=r"env.task_id=10 is not allowed: must lie in \[0, 9\]"):
        EnvConfig(suite="libero_goal", task_id=10)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("env: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        build_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        build_config(tmp_path / "list.yaml")
    assert parse_overrides(["--a.b.c=1", "--a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_cli_fails_at_start_with_one_message(tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["collect", "--suite", "libero_nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mbpo-ray: error: env.suite='libero_nope' is not allowed: choose one of libero_spatial, "
                   "libero_object, libero_goal, libero_10, libero_90"]
    assert not out.exists()
    assert main(["replay", "info", str(tmp_path / "nothing")]) == 2
    assert "is not a replay store" in capsys.readouterr().err
