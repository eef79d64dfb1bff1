"""The one check of per-image feature rows shared by the functions that take them."""

from __future__ import annotations

import torch
from torch import Tensor


def check_feature_rows(name: str, x: object, dim: int | None = None) -> Tensor:
    """Return ``x`` when it is a finite, non-empty floating-point (N, d) tensor, else raise.

    Args:
        name: how the caller's argument is named in the error.
        x: the feature rows, one per image.
        dim: the feature dimension ``x`` must have (that of the set it is compared with).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (N, d), got {type(x).__name__}.")
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating-point tensor of shape (N, d), got {tuple(x.shape)} "
            f"{x.dtype}."
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"`{name}` has {x.shape[1]} features per row but the set it is compared with has "
            f"{dim}; compute all sets with the same feature network."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty; evaluate at least one image.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` contains NaN or Inf; the features must be finite.")
    return x
