"""Every sampled token of a batch of branches has a seed of its own: shares, steps, streams (head,
wrist, reward) and requests never share one."""

from __future__ import annotations

import pytest

from mbpo_ray.seeds import derive_seed, request_seeds


def test_seeds_of_a_batch_are_all_distinct():
    base = 12345
    seeds = [s for share in range(8) for step in range(1, 5) for stream in range(3)
             for s in request_seeds(derive_seed(derive_seed(base, share), step), stream, 64)]
    assert len(seeds) == 8 * 4 * 3 * 64 and len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)
    # the sums they replace: request r of share i met request r - 1 of share i + 1
    summed = [base * 1009 + share + 7919 * step + r for share in range(8) for step in range(1, 5) for r in range(64)]
    assert len(set(summed)) < len(summed)


def test_derived_seeds_are_reproducible_and_keyed_by_order():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert derive_seed(1, 2) != derive_seed(2, 1) and derive_seed(1) != derive_seed(1, 0)
    with pytest.raises(ValueError, match="non-negative integers below"):
        derive_seed(-1)
