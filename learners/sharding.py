"""The learner's data-parallel backends (``mbpo.learner_backend``): ``ddp`` keeps a whole copy of
the policy, its gradients and its optimizer state on every rank; ``fsdp`` (torch FSDP2,
``fully_shard``) keeps 1/M of each on each of M ranks and gathers a unit's parameters only while it
runs. Both average gradients over the ranks, so they compute the same update.

What gets sharded: a policy may name its units (``fsdp_units()``, e.g. its transformer blocks); by
default each direct child module that holds parameters is one unit, and the root takes what is left.
Whole weights (to publish, checkpoint or compare) are gathered with the distributed-checkpoint API
on every rank (a collective), and rank 0 holds them.
"""

from __future__ import annotations

import torch


def _full():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def units(policy: torch.nn.Module) -> list[torch.nn.Module]:
    if hasattr(policy, "fsdp_units"):
        return list(policy.fsdp_units())
    return [m for m in policy.children() if any(True for _ in m.parameters())]


def wrap(policy: torch.nn.Module, backend: str) -> torch.nn.Module:
    """The module the ranks train through: DDP around the policy, or the policy sharded in place."""
    if backend == "ddp":
        dev = next(policy.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(policy, device_ids=ids, find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard

    for unit in units(policy):
        fully_shard(unit)
    fully_shard(policy)
    return policy


def full_state(policy: torch.nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The policy's whole state dict on CPU (rank 0 holds it when sharded; every rank must call)."""
    if not sharded:
        return policy.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(policy, options=_full())


def optimizer_state(policy: torch.nn.Module, opt: torch.optim.Optimizer, sharded: bool) -> dict:
    """The optimizer state to save: torch's own format for DDP, the whole state keyed by parameter
    name for FSDP (rank 0 holds it; every rank must call)."""
    if not sharded:
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(policy, opt, options=_full())


def by_name(state: dict) -> bool:
    """Whether an optimizer state was saved by parameter name (FSDP) rather than by index (DDP)."""
    return any(isinstance(k, str) for k in state.get("state", {}))


def name_keyed(policy: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """An unsharded module's optimizer state keyed by parameter name (to carry it into shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(policy, opt, options=StateDictOptions(full_state_dict=True))


def load_optimizer(policy: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """A name-keyed whole optimizer state into ``opt`` (sharded or not)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # strict=False: parameters that never had a gradient (unused in forward) have no state to load
    set_optimizer_state_dict(policy, opt, state, options=StateDictOptions(full_state_dict=True, strict=False))
