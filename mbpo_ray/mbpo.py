"""The VLA-MBPO driver: one controller for world-model workers, the learner group and env runners.

Run folder ``OUT``::

    OUT/start_policy/ the starting policy with its critic at zero (mbpo.critic_init=zero)
    OUT/weights/      versioned weight store (policy, world_model): what every replica pulls
    OUT/policies/vN/  policy checkpoints handed to env runners (real data, evaluation)
    OUT/checkpoint/   everything needed to resume: policy + optimizer, world model, state.json
    OUT/tb/           TensorBoard scalars
    OUT/metrics.jsonl one line per iteration
    OUT/placement.json the node of every learner rank and of the replicas that imagined the last batch
    OUT/eval/iter_N.json every evaluation episode's outcome by (task, init state)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from mbpo_ray.config import Config
from mbpo_ray.placement import check_resources, uses_runners, write_placement
from mbpo_ray.protocol import ImagineResult, Versions
from mbpo_ray.replay.samplers import success_by_bucket
from mbpo_ray.resume import (
    recover_checkpoint,
    republish,
    save_inflight,
    swap_checkpoint,
    trim_metrics,
    update_run_config,
    write_state,
)
from mbpo_ray.seeds import derive_seed
from mbpo_ray.video_log import VideoLog, log_branches, log_episodes, wandb_run

POLICY, WORLD_MODEL = "policy", "world_model"
FIT_CRITIC, IMAGINE, UPDATE, REAL_DATA = range(4)  # what a derived seed is for (see _Loop._seed)
KEEP_POLICIES = 2  # OUT/policies/vN folders kept (the newest; an older one may still be read by a runner)


def train_mbpo(cfg: Config, policy_dir: str | None, world_model_dir: str | None, store_uri: str | None, out: str,
               resume: bool = False, progress=None) -> dict:
    """Run ``cfg.mbpo.iterations`` iterations (continuing a checkpointed run with ``resume``).

    ``mbpo.mode=mbpo``: the batch each iteration learns from is imagined by the world-model pool;
    ``online``: it is rolled out in real LIBERO by the env runners (the online-RL baseline; no world
    model); ``simulator``: the branches are run in LIBERO from their start states (a perfect world
    model). The rest of the loop is the same."""
    from torch.utils.tensorboard import SummaryWriter

    mc, run = cfg.mbpo, Path(out)
    check_resources(mc)
    state = _start_state(run, resume)
    loop = _Loop(cfg, run, state, policy_dir, world_model_dir, store_uri, resume)
    if resume:  # the iterations after the checkpoint are run (and logged) again
        trim_metrics(run, state["iteration"])
    tb = SummaryWriter(str(run / "tb"), purge_step=state["iteration"] + 1 if resume else None)
    wb = wandb_run(cfg, run, loop.run_id, resume) if cfg.logging.wandb else None
    loop.videos = VideoLog(run / "videos", tb, wb)
    try:
        if not resume and mc.critic_fit_steps and mc.objective == "ppo":  # the critic meets real returns first
            _log(tb, run, loop.fit_critic(), wb)
        batch = loop.sample(state["iteration"], state.get("imagine_seed"))
        last: dict = {}
        for it in range(state["iteration"], mc.iterations):
            t_it = time.perf_counter()
            if not loop.online and (it == 0 or loop.eval_due(it)):
                log_branches(loop.videos, loop.store, batch[0], it + 1, cfg.logging.videos)
            log, batch = loop.learn(it, batch)
            policy_path = loop.real_data(it, log)
            loop.finetune(it, log)
            loop.evaluate(it, log, policy_path)
            state["iteration"] = it + 1
            log["time/iteration_s"] = time.perf_counter() - t_it
            _log(tb, run, log, wb)
            if (it + 1) % mc.checkpoint_every == 0 or it + 1 == mc.iterations:
                loop.checkpoint()
            if batch is None and it + 1 < mc.iterations:
                batch = loop.sample(it + 1)
            last = log
            if progress is not None:
                progress(log)
    finally:
        tb.close()
        if wb is not None:
            wb.finish()
        loop.close()
    return {**last, "run": str(run), "world_model_replaced": loop.pool.replaced if loop.pool else 0}


class _Loop:
    """The loop's actors and counters, one method per phase of an iteration. Every random draw has a
    seed derived from (``mbpo.seed``, what it is for, its iteration), and every imagination request
    names its weight versions and store parts, so a resumed run repeats an uninterrupted one."""

    def __init__(self, cfg: Config, run: Path, state: dict, policy_dir, world_model_dir, store_uri, resume: bool):
        from mbpo_ray.replay import ReplayStore
        from mbpo_ray.weights import WeightStore

        mc = self.mc = cfg.mbpo
        self.cfg, self.run, self.state = cfg, run, state
        self.online = mc.mode != "mbpo"  # the batch comes from LIBERO itself (online or simulator)
        if resume:  # the inputs of the run as it was started
            saved = json.loads((run / "run.json").read_text())
            policy_dir, world_model_dir, store_uri = saved["policy"], saved["world_model"], saved["store"]
            self.run_id = saved.get("run_id") or run.resolve().name
            update_run_config(run, cfg)
        else:
            self.run_id = _write_run_json(run, cfg, policy_dir, world_model_dir, store_uri)
        weights = self.weights = WeightStore(str(run / "weights"))
        # replicas always start from the run's first weights (version 0) and load the versions a request
        # names; learners (and the world-model learner) continue from the checkpoint
        start_policy = policy_dir
        if (run / "start_policy").is_dir():
            start_policy = str(run / "start_policy")
        elif not resume and mc.critic_init == "zero":
            start_policy = _critic_at_zero(policy_dir, run / "start_policy")
        self.policy_dir, self.replica_world_model = policy_dir, world_model_dir  # the run's inputs
        if resume and world_model_dir:
            world_model_dir = str(run / "checkpoint" / "world_model")
        self.world_model_dir = world_model_dir
        self.store = ReplayStore.open(store_uri)
        state.setdefault("start_parts", list(self.store.part_names))  # the store as the run found it
        state.setdefault("store_parts", list(state["start_parts"]))  # + the run's own episodes: start states
        self.runners, self.pool, self.learners, self.wm_learner = [], None, None, None
        self.videos = VideoLog(run / "videos", None)  # the driver adds TensorBoard (and W&B) to it
        # mbpo.weight_sync=broadcast: the learners push each version into the replicas
        self.broadcast = self.wm_broadcast = None
        try:
            self._start_actors(weights, start_policy, store_uri, resume)
        except BaseException:  # nothing this loop started is left running
            self.close()
            raise
        # imagine the next batch while the learner updates on this one (online: the runners need the new policy)
        self.overlap = mc.max_staleness >= 1 and not self.online

    def _start_actors(self, weights, start_policy: str, store_uri: str, resume: bool) -> None:
        import ray

        from actors.env_runner import make_env_runners
        from actors.world_model_pool import WorldModelPool
        from actors.world_model_worker import world_model_worker_class
        from learners.policy_learner import LearnerGroup
        from learners.world_model_learner import make_world_model_learner

        mc, run, state, replica_wm = self.mc, self.run, self.state, self.replica_world_model
        cfg_dict, self.meta = actor_config(self.cfg, start_policy)
        if mc.wm_finetune_every:
            self.wm_learner = make_world_model_learner(self.world_model_dir, store_uri, str(run / "weights"),
                                                       mc.wm_learner_cpus, mc.wm_learner_gpus)
        if resume:  # the checkpoint's weights (and the in-flight batch's) become the newest versions
            wm = self.wm_learner
            republish(run, weights, state, (lambda v: ray.get(wm.publish.remote(v))) if wm is not None else None)
        if not self.online:
            wm_cls = world_model_worker_class(num_cpus=mc.worker_cpus, num_gpus=mc.worker_gpus,
                                              resources=mc.custom_resources("worker"))
            bundle = {"CPU": mc.worker_cpus, **({"GPU": mc.worker_gpus} if mc.worker_gpus else {}),
                      **mc.custom_resources("worker")}
            self.pool = WorldModelPool(lambda: wm_cls.remote(cfg_dict, replica_wm, start_policy, store_uri,
                                                             str(run / "weights")),
                                       mc.wm_workers_min, mc.wm_workers_max, bundle)
        learner_policy = str(run / "checkpoint" / "policy") if resume else start_policy
        optimizer = str(run / "checkpoint" / "policy" / "optimizer.pt") if resume else None
        self.learners = LearnerGroup(cfg_dict, learner_policy, str(run / "weights"), mc.learners, mc.learner_cpus,
                                     mc.learner_gpus, optimizer_state=optimizer, store_uri=store_uri,
                                     reference_dir=start_policy, store_parts=tuple(state["start_parts"]),
                                     resources=mc.custom_resources("learner"), placement=mc.learner_placement)
        if mc.weight_sync == "broadcast" and self.pool is not None:
            from learners.weight_channel import WeightBroadcast

            self.broadcast = WeightBroadcast(self.learners.ranks, POLICY)
            if self.wm_learner is not None:
                self.wm_broadcast = WeightBroadcast([self.wm_learner], WORLD_MODEL)
        runner = mc.custom_resources("runner")
        self.runners = make_env_runners(cfg_dict, store_uri, mc.env_runners, mc.runner_cpus, runner) if uses_runners(mc) else []
        self.remake_runner = lambda: make_env_runners(cfg_dict, store_uri, 1, mc.runner_cpus, runner)[0]

    def _seed(self, purpose: int, iteration: int) -> int:
        """The seed of one draw, keyed by what it is for and its iteration (not by how many draws came
        before): a run of 2 iterations and the first 2 of a run of 3 draw the same, and so does a resume."""
        return derive_seed(self.mc.seed, purpose, iteration) % 2**31

    def fit_critic(self) -> dict:
        self.state["version"] += 1
        fit = self.learners.fit_critic(self.mc.critic_fit_steps, self.state["version"], self._seed(FIT_CRITIC, 0))
        return {"iteration": 0, "policy_version": self.state["version"],
                **{k: v for k, v in fit.items() if k.startswith("critic_fit/")}}

    def sample(self, iteration: int, seed: int | None = None):
        """The next batch of branches; its seed is checkpointed, so a resumed run draws it again."""
        state, mc = self.state, self.mc
        if seed is None:  # a new batch, on the weights held now (a resumed in-flight batch keeps its own)
            state["imagine_seed"] = self._seed(IMAGINE, iteration)
            state["imagine_versions"] = [state["version"], state["world_model_version"]]
            state["imagine_parts"] = list(state["store_parts"])
        else:  # the batch in flight at the checkpoint, on the weights and parts it named (a checkpoint
            # written before batches named them: the ones held now)
            state["imagine_seed"] = seed
            state.setdefault("imagine_versions", [state["version"], state["world_model_version"]])
            state.setdefault("imagine_parts", list(state["store_parts"]))
        if mc.mode == "online":
            return self._rollouts(state["imagine_seed"])
        if mc.mode == "simulator":
            return self._simulated(state["imagine_seed"], iteration, tuple(state["imagine_parts"]))
        from mbpo_ray.rl.batch_cache import batch_key, imagine_cached

        # the weights and store parts are named, not "the newest": the batch is the same whenever it runs
        versions, parts, seed = Versions(*state["imagine_versions"]), tuple(state["imagine_parts"]), state["imagine_seed"]
        path = batch_key(self.cfg.to_dict(), self.policy_dir, self.replica_world_model, self.store, parts, seed, versions)
        return imagine_cached(lambda: self.pool.imagine(mc.branches, seed=seed, task_ids=mc.task_ids, iteration=iteration,
                                                        group_size=mc.group_size, versions=versions, parts=parts), path, versions)

    def _rollouts(self, seed: int):
        """Online RL: the current policy rolled out in real LIBERO, one branch per episode."""
        from actors.env_runner import run_by_task
        from mbpo_ray.rl.online import rollout_jobs, trajectories_to_branches

        mc, state = self.mc, self.state
        path = self.save_policy()
        t0 = time.perf_counter()
        jobs, group = rollout_jobs(path, self.cfg.env.suite, mc.task_ids, mc.branches, mc.group_size,
                                   np.random.default_rng(seed), state["version"], f"{self.run_id}-online{seed}")
        res = run_by_task(self.runners, jobs, self.remake_runner)
        br = trajectories_to_branches([r["trajectory"] for r in res], [r["instruction"] for r in res], group)
        state["real_episodes"] = state.get("real_episodes", 0) + len(res)
        return self._real_batch(br, res, t0)

    def _simulated(self, seed: int, iteration: int, parts: tuple[str, ...]):
        """``mbpo.mode=simulator``: the branches the world model would imagine, run in LIBERO."""
        from actors.env_runner import run_by_task
        from mbpo_ray.replay.samplers import chunks_to_go, draw_groups, start_ids
        from mbpo_ray.rl.online import simulator_jobs, trajectories_to_branches

        mc = self.mc
        path = self.save_policy()
        t0 = time.perf_counter()
        index = self.store.episodes_in(parts)  # refreshes the index when a part is new to it
        episodes = [self.store.episodes[i] for i in index]
        ep, chunk, group = draw_groups(episodes, mc.branches, mc.task_ids, np.random.default_rng(seed), iteration, mc)
        table = self.store.read_start_states(index[ep], chunk, ["task_id", "sim_state"])
        jobs = simulator_jobs(path, self.cfg.env.suite, table, seed, mc.n_chunks)
        res = run_by_task(self.runners, jobs, self.remake_runner, "policy_branch")
        br = trajectories_to_branches([r["trajectory"] for r in res], [r["instruction"] for r in res], group,
                                      np.array([r["last_value"] for r in res]))
        br.start_ids, br.to_go = start_ids(episodes, ep, chunk), chunks_to_go(episodes, ep, chunk)
        return self._real_batch(br, res, t0)

    def _real_batch(self, br, res: list[dict], t0: float):
        """A batch run in LIBERO (online or simulator) as the pool returns one; its env steps counted."""
        state = self.state
        br.policy_version = state["version"]
        state["real_env_steps"] += sum(r["steps"] for r in res)
        secs = time.perf_counter() - t0
        result = ImagineResult(br, secs, 0.0, os.getpid(), Versions(state["version"], 0))
        return [result], {"seconds": secs, "redone_shares": 0, "workers": len(self.runners), "sync_seconds": 0.0}

    def learn(self, it: int, batch) -> tuple[dict, object]:
        """One update on ``batch``; returns the iteration's log and the next batch if it was imagined
        meanwhile (None otherwise)."""
        from mbpo_ray.rl.imagine import Branches

        mc, state = self.mc, self.state
        parts, im = batch
        state.pop("imagine_seed")  # consumed: a checkpoint from here on holds only a batch still in flight
        state.pop("imagine_versions", None)
        state.pop("imagine_parts", None)
        br = Branches.concat([p.branches for p in parts])
        staleness = state["version"] - br.policy_version
        refs = self.learners.update_async(br, state["version"] + 1, self._seed(UPDATE, it),
                                          critic_only=it < mc.critic_warmup)
        # overlapped, the next batch is imagined also after the last iteration: the checkpoint then holds
        # the same batch in flight whatever the run's length, so extending a run by --resume repeats it
        nxt = self.sample(it + 1) if self.overlap else None
        m = self.learners.collect(refs)
        state["version"] += 1
        pushed = self.broadcast.push(self.pool.workers, state["version"]) if self.broadcast else {}
        sums = self.learners.checksums()  # DDP ranks must hold identical weights
        update_s = m["seconds"]
        log = {"iteration": it + 1, "policy_version": state["version"], "staleness": staleness,
               "imagine/world_model_version": br.world_model_version, "imagine/chunk_transitions": br.steps,
               "imagine/chunk_transitions_per_s": br.steps / max(im["seconds"], 1e-9), "imagine/cached": im.get("cached", 0),
               "imagine/reward_mean": float(br.reward.sum(1).mean()), "imagine/p_yes_mean": float(br.p_yes[br.valid].mean()),
               "imagine/uncertainty_mean": float(br.uncertainty[br.valid].mean()),
               "imagine/redone_shares": im["redone_shares"], "pool/workers": im["workers"], **success_by_bucket(br),
               "learner/samples_per_s": m["trained"] / max(update_s, 1e-9),
               "time/imagine_s": im["seconds"], "time/update_s": update_s,
               "time/sync_s": m["publish_s"] + im["sync_seconds"],  # publish by rank 0 + the slowest replica's pull
               "learner/rank_divergence": max(sums) - min(sums), **pushed,
               "placement/learner_nodes": len(set(self.learners.nodes)),
               "placement/imagine_nodes": len({p.node for p in parts if p.node}),
               **{f"{mc.objective}/{k}": v for k, v in m.items() if k not in ("seconds", "samples", "trained", "publish_s")}}
        write_placement(self.run, self.learners.nodes, [p.node for p in parts])
        if staleness > mc.max_staleness:
            raise RuntimeError(f"imagined samples {staleness} versions old exceed mbpo.max_staleness={mc.max_staleness}")
        if self.pool is not None:
            log["pool/target"] = self.pool.autoscale(im["seconds"], update_s)
        return log, nxt

    def save_policy(self) -> str:
        """``OUT/policies/vN`` for the env runners: weights only; the two newest are kept."""
        root = self.run / "policies"
        path = root / f"v{self.state['version']}"
        if not (path / "policy.json").is_file():
            self.learners.save(str(path), _meta(self.meta, self.state), optimizer=False)
        for old in sorted(root.glob("v*"), key=lambda p: int(p.name[1:]))[:-KEEP_POLICIES]:
            shutil.rmtree(old, ignore_errors=True)
        return str(path)

    def real_data(self, it: int, log: dict) -> str | None:
        """Every ``real_every`` iterations: the current policy (sampled) in LIBERO, appended to the store."""
        from actors.env_runner import run_by_task

        mc, state, rng = self.mc, self.state, np.random.default_rng(self._seed(REAL_DATA, it))
        clone = mc.objective == "bc" and mc.bc_buffer > 0  # the learners keep the real successes
        log["real/env_steps"] = state["real_env_steps"]
        if self.online or not (mc.real_every and (it + 1) % mc.real_every == 0):
            return None
        policy_path = self.save_policy()
        t0 = time.perf_counter()
        jobs = [{"checkpoint": policy_path, "suite": self.cfg.env.suite, "task_id": int(t), "init_state": int(i),
                 "greedy": False, "seed": int(rng.integers(2**31)), "to_store": True, "policy_version": state["version"],
                 "episode_id": f"{self.run_id}-real{it + 1}-j{k}",  # stored once, also when the job runs again
                 "trajectory": clone}
                for k, (t, i) in enumerate(zip(rng.choice(mc.task_ids, mc.real_episodes),
                                               rng.integers(0, 50, mc.real_episodes), strict=True))]
        real = run_by_task(self.runners, jobs, self.remake_runner)
        # the run's view of the store grows by its own episodes only (a resumed run sees the same)
        state["store_parts"] += [p for p in self.store.parts_of([r["episode_id"] for r in real])
                                 if p not in state["store_parts"]]
        state["real_env_steps"] += sum(r["steps"] for r in real)
        state["real_episodes"] = state.get("real_episodes", 0) + len(real)  # the store's growth (append-only)
        if clone:
            from mbpo_ray.rl.online import trajectories_to_branches

            br = trajectories_to_branches([r["trajectory"] for r in real], [r["instruction"] for r in real],
                                          np.arange(len(real)))
            log["bc/real_rows_kept"] = self.learners.add_successes(br)
        log.update({"real/success": float(np.mean([r["success"] for r in real])), "real/episodes": len(real),
                    "time/real_s": time.perf_counter() - t0, "real/env_steps": state["real_env_steps"]})
        return policy_path

    def finetune(self, it: int, log: dict) -> None:
        import ray

        if self.wm_learner is not None and (it + 1) % self.mc.wm_finetune_every == 0:
            self.state["world_model_version"] += 1
            wm = ray.get(self.wm_learner.finetune.remote(self.mc.wm_finetune_steps, self.state["world_model_version"],
                                                         tuple(self.state["store_parts"]), derive_seed(self.mc.seed, it)))
            log.update({f"world_model/{k}": v for k, v in wm.items()})
            if self.wm_broadcast is not None:
                log.update(self.wm_broadcast.push(self.pool.workers, self.state["world_model_version"]))

    def evaluate(self, it: int, log: dict, policy_path: str | None) -> None:
        """On schedule and after the last iteration: LIBERO's protocol on init states 0..eval_episodes-1."""
        from actors.env_runner import run_episodes

        mc = self.mc
        if not self.eval_due(it):
            return
        policy_path = policy_path or self.save_policy()
        t0 = time.perf_counter()
        jobs = [{"checkpoint": policy_path, "suite": self.cfg.env.suite, "task_id": t, "init_state": i, "greedy": True}
                for t in mc.task_ids for i in range(mc.eval_episodes)]
        for job in jobs[: self.cfg.logging.videos]:
            job["record"] = True
        ev = run_episodes(self.runners, jobs, make_runner=self.remake_runner)
        log_episodes(self.videos, ev, it + 1)
        _write_eval(self.run, it + 1, self.state["version"], ev)
        log.update({"eval/success": float(np.mean([r["success"] for r in ev])), "eval/episodes": len(ev),
                    "time/eval_s": time.perf_counter() - t0,
                    **{f"eval/success_task{t}": float(np.mean([r["success"] for r in ev if r["task_id"] == t]))
                       for t in mc.task_ids}})

    def eval_due(self, it: int) -> bool:
        mc = self.mc
        return bool(mc.eval_episodes and ((mc.eval_every and (it + 1) % mc.eval_every == 0) or it + 1 == mc.iterations))

    def checkpoint(self) -> None:
        _checkpoint(self.run, self.learners, self.wm_learner, self.world_model_dir, self.state,
                    _meta(self.meta, self.state), self.weights)

    def close(self) -> None:
        """Every actor this loop started (also after an error half-way through ``__init__``)."""
        from mbpo_ray.connect import kill_actor

        if self.pool is not None:
            self.pool.close()
        for a in [*self.runners, *([self.wm_learner] if self.wm_learner is not None else [])]:
            kill_actor(a)
        if self.learners is not None:
            self.learners.close()


def _write_run_json(run: Path, cfg: Config, policy_dir, world_model_dir, store_uri) -> str:
    """``OUT/run.json``: the run's inputs, config and id (the prefix of its real episodes' ids)."""
    import uuid

    run_id = uuid.uuid4().hex[:8]
    needed = [("policy", policy_dir)] + ([("world model", world_model_dir)] if cfg.mbpo.mode == "mbpo" else [])
    for name, path in needed:
        if not path or not Path(path).is_dir():
            raise FileNotFoundError(f"{name} checkpoint {path} does not exist")
    (run / "run.json").write_text(json.dumps({
        "policy": str(Path(policy_dir).resolve()),
        "world_model": str(Path(world_model_dir).resolve()) if world_model_dir else None,
        "store": store_uri, "run_id": run_id, "config": cfg.to_dict()}, indent=1))
    return run_id


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


def _start_state(run: Path, resume: bool) -> dict:
    if resume:
        recover_checkpoint(run)
        path = run / "checkpoint" / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run} has no checkpoint to resume (no checkpoint/state.json)")
        return json.loads(path.read_text())
    if run.exists() and any(run.iterdir()):
        raise FileExistsError(f"{run} exists and is not empty: pass --resume to continue it, or another --out")
    run.mkdir(parents=True, exist_ok=True)
    return {"iteration": 0, "version": 0, "world_model_version": 0, "real_env_steps": 0}


def _log(tb, run: Path, log: dict, wb=None) -> None:
    step = log["iteration"]
    scalars = {k: v for k, v in log.items() if k != "iteration" and isinstance(v, (int, float))}
    for k, v in scalars.items():
        tb.add_scalar(k, v, step)
    tb.flush()
    if wb is not None:
        wb.log(scalars, step=step)
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


def _checkpoint(run: Path, learners, wm_learner, world_model_dir: str, state: dict, meta: dict, weights) -> None:
    """Everything to resume: policy + optimizer, the world model as it is now, counters and RNG."""
    import ray

    tmp = run / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    learners.save(str(tmp / "policy"), meta)
    if world_model_dir:  # online RL and simulator runs have none
        shutil.copytree(Path(world_model_dir), tmp / "world_model", ignore=shutil.ignore_patterns("state", "tb"))
    if wm_learner is not None:
        ray.get(wm_learner.save.remote(str(tmp / "world_model" / "model")))
    save_inflight(weights, tmp, state)
    write_state(tmp, state)
    swap_checkpoint(run)
