"""The VLA-MBPO driver: one controller for world-model workers, the learner group and env runners.

Run folder ``OUT``::

    OUT/start_policy/ the starting policy with its critic at zero (mbpo.critic_init=zero)
    OUT/weights/      versioned weight store (policy, world_model): what every replica pulls
    OUT/policies/vN/  policy checkpoints handed to env runners (real data, evaluation)
    OUT/checkpoint/   everything needed to resume: policy + optimizer, world model, state.json
    OUT/tb/           TensorBoard scalars
    OUT/metrics.jsonl one line per iteration
    OUT/eval/iter_N.json every evaluation episode's outcome by (task, init state)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from mbpo_ray.config import Config

POLICY, WORLD_MODEL = "policy", "world_model"


def train_mbpo(cfg: Config, policy_dir: str | None, world_model_dir: str | None, store_uri: str | None, out: str,
               resume: bool = False, progress=None) -> dict:
    """Run ``cfg.mbpo.iterations`` iterations (continuing a checkpointed run with ``resume``)."""
    import ray
    from torch.utils.tensorboard import SummaryWriter

    from actors.env_runner import make_env_runners, run_episodes
    from actors.world_model_pool import WorldModelPool
    from actors.world_model_worker import world_model_worker_class
    from learners.policy_learner import LearnerGroup
    from learners.world_model_learner import make_world_model_learner
    from mbpo_ray.rl.imagine import Branches
    from mbpo_ray.weights import WeightStore

    mc, run = cfg.mbpo, Path(out)
    _check_resources(mc)
    state = _start_state(run, resume)
    if resume:  # the inputs of the run as it was started
        saved = json.loads((run / "run.json").read_text())
        policy_dir, world_model_dir, store_uri = saved["policy"], saved["world_model"], saved["store"]
    else:
        for name, path in (("policy", policy_dir), ("world model", world_model_dir)):
            if not Path(path).is_dir():
                raise FileNotFoundError(f"{name} checkpoint {path} does not exist")
        (run / "run.json").write_text(json.dumps({"policy": str(Path(policy_dir).resolve()),
                                                  "world_model": str(Path(world_model_dir).resolve()),
                                                  "store": store_uri, "config": cfg.to_dict()}, indent=1))
    weights = WeightStore(str(run / "weights"))
    start_policy = str(run / "checkpoint" / "policy") if resume else policy_dir
    if not resume and mc.critic_init == "zero":
        start_policy = _critic_at_zero(policy_dir, run / "start_policy")
    if resume:  # the checkpointed weights become the newest version: replicas come up on them
        from safetensors.torch import load_file

        state["version"] = weights.latest(POLICY) + 1
        weights.publish(POLICY, load_file(str(run / "checkpoint" / "policy" / "model.safetensors")), state["version"])
        world_model_dir = str(run / "checkpoint" / "world_model")
    cfg_dict, meta = actor_config(cfg, start_policy)
    wm_cls = world_model_worker_class(num_cpus=mc.worker_cpus, num_gpus=mc.worker_gpus)
    bundle = {"CPU": mc.worker_cpus, **({"GPU": mc.worker_gpus} if mc.worker_gpus else {})}
    pool = WorldModelPool(lambda: wm_cls.remote(cfg_dict, world_model_dir, start_policy, store_uri, str(run / "weights")),
                          mc.wm_workers_min, mc.wm_workers_max, bundle)
    learners = LearnerGroup(cfg_dict, start_policy, str(run / "weights"), mc.learners, mc.learner_cpus,
                            mc.learner_gpus,
                            optimizer_state=str(run / "checkpoint" / "policy" / "optimizer.pt") if resume else None,
                            store_uri=store_uri)
    runners = make_env_runners(cfg_dict, store_uri, mc.env_runners, mc.runner_cpus) if _uses_runners(mc) else []
    remake_runner = lambda: make_env_runners(cfg_dict, store_uri, 1, mc.runner_cpus)[0]  # noqa: E731
    wm_learner = (make_world_model_learner(world_model_dir, store_uri, str(run / "weights"), mc.wm_learner_cpus,
                                           mc.wm_learner_gpus) if mc.wm_finetune_every else None)
    tb = SummaryWriter(str(run / "tb"))
    rng = np.random.default_rng(mc.seed)
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
    overlap = mc.max_staleness >= 1  # imagine the next batch while the learner updates on this one

    def imagine(iteration: int, seed: int | None = None):  # the batch's seed is checkpointed: a resumed run imagines it again
        state["imagine_seed"] = int(rng.integers(2**31)) if seed is None else seed
        return pool.imagine(mc.branches, seed=state["imagine_seed"], task_ids=mc.task_ids, iteration=iteration,
                            group_size=mc.group_size)

    if not resume and mc.critic_fit_steps and mc.objective == "ppo":  # the critic meets real returns first
        state["version"] += 1
        fit = learners.fit_critic(mc.critic_fit_steps, state["version"], int(rng.integers(2**31)))
        _log(tb, run, {"iteration": 0, "policy_version": state["version"],
                       **{k: v for k, v in fit.items() if k.startswith("critic_fit/")}})
    batch = imagine(state["iteration"], state.get("imagine_seed"))
    last: dict = {}
    for it in range(state["iteration"], mc.iterations):
        t_it = time.perf_counter()
        (parts, im), batch = batch, None
        state.pop("imagine_seed")  # consumed: a checkpoint from here on holds only a batch still in flight
        br = Branches.concat([p["branches"] for p in parts])
        staleness = state["version"] - br.policy_version
        refs = learners.update_async(br, state["version"] + 1, int(rng.integers(2**31)), critic_only=it < mc.critic_warmup)
        if overlap and it + 1 < mc.iterations:
            batch = imagine(it + 1)
        m = learners.collect(refs)
        state["version"] += 1
        sums = learners.checksums()  # DDP ranks must hold identical weights
        update_s = m["seconds"]
        log = {"iteration": it + 1, "policy_version": state["version"], "staleness": staleness,
               "imagine/chunk_transitions": br.steps, "imagine/chunk_transitions_per_s": br.steps / im["seconds"],
               "imagine/reward_mean": float(br.reward.sum(1).mean()), "imagine/p_yes_mean": float(br.p_yes[br.valid].mean()),
               "imagine/uncertainty_mean": float(br.uncertainty[br.valid].mean()),
               "imagine/redone_shares": im["redone_shares"], "pool/workers": im["workers"],
               **_success_by_start(br),
               "learner/samples_per_s": m["trained"] / max(update_s, 1e-9),
               "time/imagine_s": im["seconds"], "time/update_s": update_s,
               "time/sync_s": m["publish_s"] + im["sync_seconds"],  # publish by rank 0 + the slowest replica's pull
               "learner/rank_divergence": max(sums) - min(sums),
               **{f"{mc.objective}/{k}": v for k, v in m.items() if k not in ("seconds", "samples", "trained", "publish_s")}}
        if staleness > mc.max_staleness:
            raise RuntimeError(f"imagined samples {staleness} versions old exceed mbpo.max_staleness={mc.max_staleness}")
        log["pool/target"] = pool.autoscale(im["seconds"], update_s)
        policy_path = None
        if mc.real_every and (it + 1) % mc.real_every == 0:
            policy_path = learners.save(str(run / "policies" / f"v{state['version']}"), _meta(meta, state))
            t0 = time.perf_counter()
            jobs = [{"checkpoint": policy_path, "suite": cfg.env.suite, "task_id": int(t), "init_state": int(i),
                     "greedy": False, "seed": int(rng.integers(2**31)), "to_store": True,
                     "policy_version": state["version"]}
                    for t, i in zip(rng.choice(mc.task_ids, mc.real_episodes), rng.integers(0, 50, mc.real_episodes),
                                    strict=True)]
            real = run_episodes(runners, jobs, make_runner=remake_runner)
            state["real_env_steps"] += sum(r["steps"] for r in real)
            state["real_episodes"] = state.get("real_episodes", 0) + len(real)  # the store's growth (append-only)
            log.update({"real/success": float(np.mean([r["success"] for r in real])), "real/episodes": len(real),
                        "time/real_s": time.perf_counter() - t0})
        log["real/env_steps"] = state["real_env_steps"]
        if wm_learner is not None and (it + 1) % mc.wm_finetune_every == 0:
            state["world_model_version"] += 1
            wm = ray.get(wm_learner.finetune.remote(mc.wm_finetune_steps, state["world_model_version"]))
            log.update({f"world_model/{k}": v for k, v in wm.items()})
        if mc.eval_episodes and ((mc.eval_every and (it + 1) % mc.eval_every == 0) or it + 1 == mc.iterations):
            policy_path = policy_path or learners.save(str(run / "policies" / f"v{state['version']}"), _meta(meta, state))
            t0 = time.perf_counter()
            jobs = [{"checkpoint": policy_path, "suite": cfg.env.suite, "task_id": t, "init_state": i, "greedy": True}
                    for t in mc.task_ids for i in range(mc.eval_episodes)]
            ev = run_episodes(runners, jobs, make_runner=remake_runner)
            _write_eval(run, it + 1, state["version"], ev)
            log.update({"eval/success": float(np.mean([r["success"] for r in ev])), "eval/episodes": len(ev),
                        "time/eval_s": time.perf_counter() - t0,
                        **{f"eval/success_task{t}": float(np.mean([r["success"] for r in ev if r["task_id"] == t]))
                           for t in mc.task_ids}})
        state["iteration"] = it + 1
        log["time/iteration_s"] = time.perf_counter() - t_it
        _log(tb, run, log)
        if (it + 1) % mc.checkpoint_every == 0 or it + 1 == mc.iterations:
            _checkpoint(run, learners, wm_learner, world_model_dir, state, rng, _meta(meta, state))
        if not overlap and it + 1 < mc.iterations:
            batch = imagine(it + 1)
        last = log
        if progress is not None:
            progress(log)
    tb.close()
    for r in runners:
        ray.kill(r)
    for w in pool.workers:
        ray.kill(w)
    return {**last, "run": str(run), "world_model_replaced": pool.replaced}


def _success_by_start(br) -> dict[str, float]:
    """Imagined success per branch, by how many chunks the start state lay before its episode's end."""
    from mbpo_ray.replay.samplers import TO_GO_BUCKETS, bucket_name

    if len(br.to_go) != len(br):
        return {}
    hit = br.terminal.any(axis=1)
    out = {}
    for lo, hi in TO_GO_BUCKETS:
        sel = (br.to_go >= lo) & (br.to_go <= hi)
        if sel.any():
            out[f"imagine/success_to_go_{bucket_name(lo, hi)}"] = float(hit[sel].mean())
            out[f"imagine/starts_to_go_{bucket_name(lo, hi)}"] = int(sel.sum())
    return out


def actor_config(cfg: Config, policy_dir: str) -> tuple[dict, dict]:
    """The config the loop's actors get (frames at the policy's store size, its chunk size) and the
    policy checkpoint's metadata."""
    from mbpo_ray.policy import read_policy_meta

    cfg_dict, meta = cfg.to_dict(), read_policy_meta(policy_dir)
    cfg_dict["env"] = {**cfg_dict["env"], "image_size": meta["store_image_size"],
                       "chunk_size": meta["bins"]["chunk_size"]}
    return cfg_dict, meta


def _critic_at_zero(policy_dir: str, dst: Path) -> str:
    """A copy of the starting policy whose critic answers V = 0 everywhere (the last linear layer of
    ``value_head``, the critic the learner trains, zeroed). SFT never trains the value head: its
    random outputs would otherwise be bootstrapped into every imagined return until the critic
    unlearns them."""
    import torch

    from mbpo_ray.policy import load_policy, read_policy_meta, save_policy

    policy = load_policy(policy_dir)
    last = [m for m in policy.value_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    meta = read_policy_meta(policy_dir)
    save_policy(policy, dst, {k: v for k, v in meta.items() if k not in ("policy", "bins")})
    return str(dst)


def _uses_runners(mc) -> bool:
    return bool(mc.real_every or mc.eval_episodes)


def resources(mc) -> dict[str, float]:
    """CPUs and GPUs the loop's actors reserve at once (world-model workers at their maximum)."""
    runners = mc.env_runners if _uses_runners(mc) else 0
    wm_learner = 1 if mc.wm_finetune_every else 0
    return {"CPU": mc.wm_workers_max * mc.worker_cpus + mc.learners * mc.learner_cpus
            + runners * mc.runner_cpus + wm_learner * mc.wm_learner_cpus,
            "GPU": mc.wm_workers_max * mc.worker_gpus + mc.learners * mc.learner_gpus
            + wm_learner * mc.wm_learner_gpus}


def _check_resources(mc) -> None:
    """Actors that cannot all be placed would wait forever: on a fixed cluster, say so before starting
    anything. Where an autoscaler adds nodes (``MBPO_RAY_AUTOSCALING=1``) the loop waits for them."""
    import os

    import ray

    from mbpo_ray.config import ConfigError

    have = ray.cluster_resources()
    for kind, need in resources(mc).items():
        if need > have.get(kind, 0.0) + 1e-9:
            msg = (f"the loop reserves {need:g} {kind} (world-model workers {mc.wm_workers_max} x "
                   f"{mc.worker_cpus:g} CPU / {mc.worker_gpus:g} GPU, learners {mc.learners} x {mc.learner_cpus:g} / "
                   f"{mc.learner_gpus:g}, env runners {mc.env_runners} x {mc.runner_cpus:g} CPU"
                   f"{f', world-model learner {mc.wm_learner_cpus:g} / {mc.wm_learner_gpus:g}' if mc.wm_finetune_every else ''}"
                   f") but the cluster has {have.get(kind, 0.0):g}")
            if os.environ.get("MBPO_RAY_AUTOSCALING"):
                print(f"{msg}: waiting for the autoscaler to add nodes", flush=True)
                continue
            raise ConfigError(f"{msg}: lower the mbpo counts or *_cpus / *_gpus, or add nodes "
                              "(MBPO_RAY_AUTOSCALING=1 on a cluster whose autoscaler adds them)")


def _start_state(run: Path, resume: bool) -> dict:
    if resume:
        path = run / "checkpoint" / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run} has no checkpoint to resume (no checkpoint/state.json)")
        return json.loads(path.read_text())
    if run.exists() and any(run.iterdir()):
        raise FileExistsError(f"{run} exists and is not empty: pass --resume to continue it, or another --out")
    run.mkdir(parents=True, exist_ok=True)
    return {"iteration": 0, "version": 0, "world_model_version": 0, "real_env_steps": 0}


def _log(tb, run: Path, log: dict) -> None:
    step = log["iteration"]
    for k, v in log.items():
        if k != "iteration" and isinstance(v, (int, float)):
            tb.add_scalar(k, v, step)
    tb.flush()
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(log) + "\n")


def _write_eval(run: Path, iteration: int, version: int, results: list[dict]) -> None:
    """``OUT/eval/iter_N.json``: every evaluation episode's outcome by (task, init state), so a run can
    be compared with another policy episode by episode on the same init states (a paired test)."""
    (run / "eval").mkdir(exist_ok=True)
    episodes = sorted(({"task_id": int(r["task_id"]), "init_state": int(r["init_state"]), "success": bool(r["success"])}
                       for r in results), key=lambda e: (e["task_id"], e["init_state"]))
    (run / "eval" / f"iter_{iteration}.json").write_text(json.dumps(
        {"iteration": iteration, "policy_version": version, "greedy": True, "episodes": episodes}, indent=0))


def _meta(sft_meta: dict, state: dict) -> dict:
    """What a policy checkpoint of this run records besides config and bins."""
    return {"store_image_size": sft_meta["store_image_size"], "policy_version": state["version"],
            "iteration": state["iteration"], "demos": sft_meta.get("demos")}


def _checkpoint(run: Path, learners, wm_learner, world_model_dir: str, state: dict, rng, meta: dict) -> None:
    """Everything to resume: policy + optimizer, the world model as it is now, counters and RNG."""
    import ray

    tmp = run / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    learners.save(str(tmp / "policy"), meta)
    src = Path(world_model_dir)
    shutil.copytree(src, tmp / "world_model", ignore=shutil.ignore_patterns("state", "tb"))
    if wm_learner is not None:
        ray.get(wm_learner.save.remote(str(tmp / "world_model" / "model")))
    (tmp / "state.json").write_text(json.dumps({**state, "rng": rng.bit_generator.state}))
    old = run / "checkpoint"
    if old.exists():
        shutil.rmtree(old)
    tmp.rename(old)
