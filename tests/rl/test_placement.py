"""Where the loop's actors go: custom node resources in the config, a placement the cluster cannot
satisfy refused with a clear error (and nothing left reserved), the reservation check."""

from __future__ import annotations

import pytest

from mbpo_ray.config import ConfigError, build_config
from mbpo_ray.placement import check_resources, resources


def test_custom_resources_are_parsed_and_counted():
    mc = build_config(overrides=["--mbpo.worker_resources=wm_node:1,fast:0.5", "--mbpo.wm_workers_max=3",
                                 "--mbpo.learner_resources=train_node:1"]).mbpo
    assert mc.custom_resources("worker") == {"wm_node": 1.0, "fast": 0.5}
    need = resources(mc)
    assert need["wm_node"] == 3 and need["fast"] == 1.5 and need["train_node"] == mc.learners


@pytest.mark.parametrize("text", ["wm_node", "wm_node:0", "wm_node:x", ":1", "CPU:2"])
def test_a_malformed_resource_list_is_refused(text):
    with pytest.raises(ConfigError, match="mbpo.worker_resources"):
        build_config(overrides=[f"--mbpo.worker_resources={text}"])


def test_a_placement_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match="mbpo.learner_placement"):
        build_config(overrides=["--mbpo.learner_placement=diagonal"])


def test_a_resource_no_node_has_is_refused_before_anything_starts(ray_cluster):
    mc = build_config(overrides=["--mbpo.worker_resources=inference_node:1"]).mbpo
    with pytest.raises(ConfigError, match=r"inference_node \(mbpo.worker_resources=inference_node:1\)"):
        check_resources(mc)


def test_ranks_that_cannot_be_placed_fail_fast_and_release_their_reservation(ray_cluster, loop_inputs, tmp_path):
    from ray.util import placement_group_table

    from learners.policy_learner import LearnerGroup
    from mbpo_ray.mbpo import actor_config
    from mbpo_ray.placement import PlacementError

    _, _, policy_dir, _ = loop_inputs
    cfg = actor_config(build_config(), policy_dir)[0]
    before = {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"}
    # one node here: strict_spread cannot put two ranks on two nodes
    with pytest.raises(PlacementError, match="2 learner ranks .* strict_spread"):
        LearnerGroup(cfg, policy_dir, str(tmp_path / "w"), 2, num_cpus=0.25, placement="strict_spread",
                     place_timeout_s=5)
    assert {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"} == before


def test_a_group_gives_its_reservation_back_when_closed_or_dropped(ray_cluster, loop_inputs, tmp_path):
    """A placement group outlives the handles of its actors: a group closed, or only dropped, frees it."""
    import gc
    import time

    import ray

    from learners.policy_learner import LearnerGroup
    from mbpo_ray.mbpo import actor_config

    _, _, policy_dir, _ = loop_inputs
    cfg = actor_config(build_config(), policy_dir)[0]

    def free_cpus(want: float) -> float:
        end = time.monotonic() + 30
        while abs(ray.available_resources().get("CPU", 0.0) - want) > 1e-6 and time.monotonic() < end:
            time.sleep(0.5)
        return ray.available_resources().get("CPU", 0.0)

    before = ray.available_resources().get("CPU", 0.0)
    with LearnerGroup(cfg, policy_dir, str(tmp_path / "a"), 2, num_cpus=0.25):
        assert free_cpus(before - 0.5) == pytest.approx(before - 0.5)
    assert free_cpus(before) == pytest.approx(before)
    group = LearnerGroup(cfg, policy_dir, str(tmp_path / "b"), 2, num_cpus=0.25)
    assert free_cpus(before - 0.5) == pytest.approx(before - 0.5)
    del group
    gc.collect()
    assert free_cpus(before) == pytest.approx(before)
