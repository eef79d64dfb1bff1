"""Which query images are pixel-identical: an exact integer digest of each image's float32 bits,
computed on the images' device, and the groups of equal digests.

Without a bank the queries are their own reference; two copies of one image would then be each
other's nearest neighbour (at distance 0) and iFID would collapse to rFID. The metric gives the
copies one id, so a query never takes any copy of itself, as a bank with ids already does.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Independent random weights per digest column; two columns of 64 bits.
_DIGESTS = 2
# Elements hashed per step (bounds the int64 working memory, about 128 MiB).
_BLOCK_ELEMENTS = 1 << 24


def _weights(n: int, device: torch.device) -> Tensor:
    g = torch.Generator().manual_seed(0x1F1D)
    low = torch.randint(-(2**62), 2**62, (_DIGESTS, n), generator=g, dtype=torch.long)
    return (low | 1).to(device)  # odd weights


def pixel_digests(images: Tensor) -> Tensor:
    """(B, 2) int64 digests of the images (B, ...): equal for images with the same float32
    values, different otherwise (two different images share digests with probability at most 2^-64).

    Each column is ``sum_j bits_j * w_j`` over the image's float32 bit patterns, in wrapping
    int64 arithmetic with fixed random odd weights: exact, so it depends neither on the batch
    the image is in nor on the device. ``-0.0`` and ``0.0`` differ, as their bytes do.
    """
    flat = images.detach().to(torch.float32).contiguous().reshape(images.shape[0], -1)
    bits = flat.view(torch.int32)
    weights = _weights(bits.shape[1], bits.device)
    out = torch.zeros(bits.shape[0], _DIGESTS, dtype=torch.long, device=bits.device)
    step = max(1, _BLOCK_ELEMENTS // max(bits.shape[1], 1))
    for start in range(0, bits.shape[0], step):
        block = bits[start : start + step].long()
        for d in range(_DIGESTS):
            out[start : start + step, d] = (block * weights[d]).sum(1)
    return out


def identity_groups(digests: Tensor) -> tuple[Tensor, int]:
    """For (N, 2) digests: (N,) int64 ids, equal for pixel-identical images (the position of the
    first of them), and how many images repeat an earlier one."""
    if digests.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=digests.device), 0
    _, inverse = torch.unique(digests, dim=0, return_inverse=True)
    n = digests.shape[0]
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long, device=digests.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=digests.device), reduce="amin")
    ids = first[inverse]
    return ids, int(n - first.shape[0])
