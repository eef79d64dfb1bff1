"""Random choices tied to what they are made for (a query, a reference row, a training step).

Every random draw of the metric comes from a generator seeded by ``(seed, stream, key)``: the
key is the global position or id of the query (or row) the draw is for, the stream says which
choice it is (posterior sample, top-k pick, mask positions, ...). A query therefore gets the same
posterior sample, neighbour pick and mask whatever the batch it arrives in, the rank that
processes it, the world size, or how often the run was interrupted and resumed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["STREAMS", "key_seed", "keyed_generators"]

# One stream per kind of choice, so the draws for one key never coincide across choices.
STREAMS = {
    "posterior": 1,  # z ~ q(z | x) of a query
    "pick": 2,  # which of the k nearest neighbours
    "mask": 3,  # which latent positions the mask interpolation takes from the neighbour
    "reference": 4,  # z ~ q(z | x) of a reference image (bank fill, streamed re-encoding)
    "subsample": 5,  # which images of a training batch a monitor re-encodes, and their samples
}

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of SplitMix64: a bijective mix of 64-bit integers with good avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def key_seed(seed: int, stream: str, key: int) -> int:
    """A 64-bit generator seed for one (seed, stream, key); any ints, negative ones included."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}.")
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ STREAMS[stream])
    return _splitmix64(h ^ (int(key) & _MASK64))


def keyed_generators(seed: int, keys: Tensor | Iterable[int], stream: str) -> list[torch.Generator]:
    """One CPU generator per key, seeded by :func:`key_seed` (draw on the CPU, then move)."""
    if isinstance(keys, Tensor):
        keys = keys.reshape(-1).tolist()
    return [torch.Generator().manual_seed(key_seed(seed, stream, key)) for key in keys]
