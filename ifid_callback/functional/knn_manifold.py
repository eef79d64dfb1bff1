"""k-NN manifold precision and recall (Kynkäänniemi et al., 2019) of two feature sets."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ifid_callback.functional.feature_rows import check_feature_rows

# The paper's neighbourhood size.
DEFAULT_K = 3
# Distance blocks of at most this many elements (float64: 128 MiB).
_BLOCK_ELEMENTS = 1 << 24


class PrecisionRecall(NamedTuple):
    """Fractions in [0, 1] (float64 0-d tensors on the features' device)."""

    precision: Tensor
    recall: Tensor


def _rows_per_block(columns: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
        return chunk_size
    return max(1, _BLOCK_ELEMENTS // max(columns, 1))


def _squared_distances(rows: Tensor, cols: Tensor, cols_sq: Tensor) -> Tensor:
    rows_sq = (rows * rows).sum(1, keepdim=True)
    return (rows_sq + cols_sq[None, :] - 2 * rows @ cols.T).clamp_min(0.0)


def manifold_radii(features: Tensor, k: int = DEFAULT_K, chunk_size: int | None = None) -> Tensor:
    """Distance from each row to its k-th nearest other row: the radius of its manifold ball.

    Args:
        features: (N, d) finite features, N > k.
        k: neighbourhood size, >= 1. A row's own distance 0 is not counted; exact duplicates of
            a row are (as in the paper's code, which takes the (k+1)-th smallest distance).
        chunk_size: rows per distance block; None keeps blocks near 16M elements.

    Returns:
        (N,) float64 Euclidean radii, on the features' device.
    """
    x = check_feature_rows("features", features).detach().to(torch.float64)
    _check_k(k, x.shape[0], "features")
    return _squared_radii(x, k, chunk_size).sqrt()


def _check_k(k: int, rows: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if rows <= k:
        raise ValueError(
            f"`{name}` has {rows} rows; k={k} needs at least {k + 1} (each row's k nearest "
            "other rows). Evaluate more images or lower k."
        )


def _squared_radii(x: Tensor, k: int, chunk_size: int | None) -> Tensor:
    step = _rows_per_block(x.shape[0], chunk_size)
    x_sq = (x * x).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for r0 in range(0, x.shape[0], step):
        block = _squared_distances(x[r0 : r0 + step], x, x_sq)
        # Each row's own distance is among the k + 1 smallest (it is the smallest possible).
        out[r0 : r0 + step] = block.kthvalue(k + 1, dim=1).values
    return out


def precision_recall(
    real: Tensor, fake: Tensor, k: int = DEFAULT_K, chunk_size: int | None = None
) -> PrecisionRecall:
    """Improved precision and recall of a fake feature set against a real one.

    The real manifold is the union of balls around each real row, of radius the distance to its
    k-th nearest other real row (Euclidean); likewise the fake manifold. Precision is the fraction
    of fake rows inside the real manifold (a ball's boundary counts as inside), recall the fraction
    of real rows inside the fake manifold. Distances are computed in float64, ``chunk_size`` rows
    at a time, on the features' device; three distance products (real-real and fake-fake for the
    radii, one fake-real block serving both numbers): O((N^2 + M^2 + N M) d) work,
    O(chunk x max(N, M)) memory.

    Args:
        real: (N, d) features of real images, finite, N > k.
        fake: (M, d) features of generated images (e.g. decoded interpolants), M > k.
        k: neighbourhood size, >= 1 (the paper's 3).
        chunk_size: rows per distance block; None keeps blocks near 16M elements.

    Returns:
        :class:`PrecisionRecall` of float64 0-d tensors in [0, 1].
    """
    x = check_feature_rows("real", real).detach().to(torch.float64)
    y = check_feature_rows("fake", fake, x.shape[1]).detach().to(torch.float64)
    if y.device != x.device:
        raise ValueError(
            f"`real` is on {x.device} and `fake` on {y.device}; move both to one device."
        )
    _check_k(k, x.shape[0], "real")
    _check_k(k, y.shape[0], "fake")
    real_radii = _squared_radii(x, k, chunk_size)
    fake_radii = _squared_radii(y, k, chunk_size)
    step = _rows_per_block(x.shape[0], chunk_size)
    x_sq = (x * x).sum(1)
    fake_inside = torch.empty(y.shape[0], dtype=torch.bool, device=x.device)
    real_inside = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for f0 in range(0, y.shape[0], step):
        block = _squared_distances(y[f0 : f0 + step], x, x_sq)  # (fake rows, real rows)
        fake_inside[f0 : f0 + step] = (block <= real_radii[None, :]).any(dim=1)
        real_inside |= (block <= fake_radii[f0 : f0 + step, None]).any(dim=0)
    precision = fake_inside.to(torch.float64).mean()
    recall = real_inside.to(torch.float64).mean()
    return PrecisionRecall(precision, recall)
