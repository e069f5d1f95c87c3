"""Seeds derived from the ids of the work they drive: (base seed, share, step, stream, request).

Sums such as ``seed + i`` collide across levels (request r of share i and request r - 1 of share
i + 1 got the same vLLM seed, so two branches sampled the same tokens); hashing the whole key tuple
through numpy's ``SeedSequence`` gives every tuple its own 63-bit seed.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed for the key tuple; distinct tuples give independent seeds."""
    if any(not 0 <= int(k) < 2**64 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers below 2**64, got {keys}")
    # the tuple's length, then two 32-bit words per key: SeedSequence reads its entropy as one big
    # number (so [a] and [a, 0] would agree); a fixed-width encoding keeps distinct tuples distinct
    words = [len(keys)] + [w for k in keys for w in (int(k) & 0xFFFFFFFF, int(k) >> 32)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def request_seeds(seed: int, stream: int, n: int) -> list[int]:
    """One seed per request of an engine call; ``stream`` tells the calls of one step apart."""
    return [derive_seed(seed, stream, i) for i in range(n)]
