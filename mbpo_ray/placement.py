"""Where the loop's actors go: the custom node resources an actor kind asks for, what the loop
reserves (CPUs, GPUs, custom resources), a refusal of a loop a fixed cluster cannot place, the
learner ranks' placement group, and ``OUT/placement.json``, the nodes the actors ran on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mbpo_ray.config_loader import fail

# mbpo.learner_placement -> Ray's placement-group strategy
STRATEGIES = {"pack": "PACK", "spread": "SPREAD", "strict_pack": "STRICT_PACK", "strict_spread": "STRICT_SPREAD"}


def parse_resources(name: str, text: str) -> dict[str, float]:
    """``"wm_node:1,fast_disk:0.5"`` -> ``{"wm_node": 1.0, "fast_disk": 0.5}``: custom Ray node
    resources an actor needs (CPU and GPU have fields of their own)."""
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, amount = item.partition(":")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not key.strip() or value <= 0:
            fail(name, text, "a comma-separated list of name:amount with amount > 0, e.g. wm_node:1")
        if key.strip() in ("CPU", "GPU"):
            fail(name, text, "custom resources only; CPUs and GPUs have the *_cpus / *_gpus fields")
        out[key.strip()] = value
    return out


def uses_runners(mc) -> bool:
    return bool(mc.real_every or mc.eval_episodes or mc.mode != "mbpo")


def resources(mc) -> dict[str, float]:
    """CPUs, GPUs and custom resources the loop's actors reserve at once (world-model workers at
    their maximum)."""
    runners = mc.env_runners if uses_runners(mc) else 0
    wm_learner = 1 if mc.wm_finetune_every else 0
    workers = 0 if mc.mode != "mbpo" else mc.wm_workers_max
    out = {"CPU": workers * mc.worker_cpus + mc.learners * mc.learner_cpus
           + runners * mc.runner_cpus + wm_learner * mc.wm_learner_cpus,
           "GPU": workers * mc.worker_gpus + mc.learners * mc.learner_gpus
           + wm_learner * mc.wm_learner_gpus}
    for kind, count in (("worker", workers), ("learner", mc.learners), ("runner", runners)):
        for key, amount in mc.custom_resources(kind).items():
            out[key] = out.get(key, 0.0) + count * amount
    return out


def check_resources(mc) -> None:
    """Actors that cannot all be placed would wait forever: on a fixed cluster, say so before starting
    anything. Where an autoscaler adds nodes (``MBPO_RAY_AUTOSCALING=1``) the loop waits for them."""
    import ray

    from mbpo_ray.config import ConfigError

    have = ray.cluster_resources()
    for kind, need in resources(mc).items():
        if need > have.get(kind, 0.0) + 1e-9:
            if kind in ("CPU", "GPU"):
                terms = (f"world-model workers {mc.wm_workers_max} x {mc.worker_cpus:g} CPU / {mc.worker_gpus:g} GPU, "
                         f"learners {mc.learners} x {mc.learner_cpus:g} / {mc.learner_gpus:g}, env runners "
                         f"{mc.env_runners} x {mc.runner_cpus:g} CPU"
                         f"{f', world-model learner {mc.wm_learner_cpus:g} / {mc.wm_learner_gpus:g}' if mc.wm_finetune_every else ''}")
            else:
                terms = ", ".join(f"mbpo.{k}_resources={getattr(mc, f'{k}_resources')}"
                                  for k in ("worker", "learner", "runner") if kind in mc.custom_resources(k))
            msg = f"the loop reserves {need:g} {kind} ({terms}) but the cluster has {have.get(kind, 0.0):g}"
            if os.environ.get("MBPO_RAY_AUTOSCALING"):
                print(f"{msg}: waiting for the autoscaler to add nodes", flush=True)
                continue
            raise ConfigError(f"{msg}: lower the mbpo counts or *_cpus / *_gpus, or add nodes "
                              "(MBPO_RAY_AUTOSCALING=1 on a cluster whose autoscaler adds them)")


def write_placement(run: Path, learner_nodes: list[str], imagine_nodes: list[str]) -> None:
    """``OUT/placement.json``: the node of every learner rank and the nodes that imagined the last batch."""
    (run / "placement.json").write_text(json.dumps(
        {"learner_ranks": learner_nodes, "imagine_nodes": sorted(set(imagine_nodes))}, indent=1))


class PlacementError(RuntimeError):
    """The cluster cannot place the learner ranks as asked."""


def place_bundles(n: int, bundle: dict[str, float], placement: str, timeout_s: float | None):
    """A placement group of ``n`` bundles, ready; a clear error (and nothing left reserved) when the
    cluster cannot hold it within ``timeout_s`` (default: 120 s, or an hour where an autoscaler adds
    nodes, ``MBPO_RAY_AUTOSCALING=1``)."""
    import ray
    from ray.util.placement_group import placement_group

    bundle = {k: float(v) for k, v in bundle.items() if v}
    if not bundle:
        raise PlacementError("a learner rank reserves nothing: give it CPUs or GPUs (mbpo.learner_cpus / learner_gpus)")
    if timeout_s is None:
        timeout_s = 3600.0 if os.environ.get("MBPO_RAY_AUTOSCALING") else 120.0
    pg = placement_group([dict(bundle) for _ in range(n)], strategy=STRATEGIES[placement])
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(pg)
        nodes = [x["Resources"] for x in ray.nodes() if x["Alive"]]
        raise PlacementError(
            f"the cluster cannot place {n} learner ranks of {bundle} with placement {placement} "
            f"({STRATEGIES[placement]}) within {timeout_s:g} s; its nodes have {nodes}: lower mbpo.learners or "
            "the per-rank resources, choose another mbpo.learner_placement, or add nodes") from None
    return pg
