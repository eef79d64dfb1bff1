"""Per-channel standardisation of latents (``bn_channel``) and the top-k softmax(-MSE) weights.

In the ``bn_channel`` variant the neighbour search and the top-k pick weights see latents
standardised per channel with the reference bank's statistics, like a non-affine BatchNorm in eval
mode; the interpolation itself stays on the raw latents. Latents are flattened channel-major, as
``z.reshape(B, -1)`` of a (B, C, H, W) tensor gives: row element ``c * H * W + p`` is channel c.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# BatchNorm's default: keeps a constant channel finite (divided by sqrt(eps) instead of 0).
DEFAULT_EPS = 1e-5
# Rows per float64 block when accumulating statistics.
_STAT_BLOCK_ELEMENTS = 1 << 22


class ChannelStatistics(NamedTuple):
    """Per-channel mean and scale ``sqrt(var + eps)`` (float64, shape (C,) each)."""

    mean: Tensor
    std: Tensor


def _as_channels(x: Tensor, channels: int | None, name: str) -> Tensor:
    """View latents as (N, C, S): (B, C, ...) tensors directly, (N, C*S) rows with ``channels``."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(
            f"`{name}` must be floating-point latents (B, C, ...) or flattened rows (N, C*S), "
            f"got {type(x).__name__ if not isinstance(x, Tensor) else (tuple(x.shape), x.dtype)}."
        )
    if x.ndim == 2:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(
                f"`{name}` is flattened (N, D) rows; pass channels=C, the latents' channel count."
            )
        if x.shape[1] % channels:
            raise ValueError(
                f"`{name}` rows have {x.shape[1]} elements, not a multiple of channels={channels}."
            )
        return x.reshape(x.shape[0], channels, -1)
    if channels is not None and channels != x.shape[1]:
        raise ValueError(f"`{name}` has {x.shape[1]} channels but channels={channels} was given.")
    return x.reshape(x.shape[0], x.shape[1], -1)


def channel_statistics(
    latents: Tensor, channels: int | None = None, eps: float = DEFAULT_EPS
) -> ChannelStatistics:
    """Per-channel mean and ``sqrt(population variance + eps)`` over all rows and positions.

    Accumulated in float64 blocks (Chan et al.'s pairwise update), so a large bank is never
    copied whole to float64.

    Args:
        latents: (B, C, H, W) (any number of trailing spatial dims) or flattened channel-major
            rows (N, C*S) with ``channels`` given; finite; N >= 1.
        channels: C for flattened rows; for (B, C, ...) input it may be omitted.
        eps: added to the variance, >= 0.

    Returns:
        :class:`ChannelStatistics` of shape (C,) each, float64, on the latents' device.
    """
    x = _as_channels(latents, channels, "latents")
    if x.shape[0] < 1 or x.shape[2] < 1:
        raise ValueError("`latents` is empty; channel statistics need at least one value.")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("`latents` contains NaN or Inf; standardise finite latents only.")
    n_c = x.shape[1]
    count = 0
    mean = torch.zeros(n_c, dtype=torch.float64, device=x.device)
    m2 = torch.zeros(n_c, dtype=torch.float64, device=x.device)
    step = max(1, _STAT_BLOCK_ELEMENTS // (n_c * x.shape[2]))
    for r0 in range(0, x.shape[0], step):
        block = x[r0 : r0 + step].to(torch.float64).transpose(0, 1).reshape(n_c, -1)
        b_count = block.shape[1]
        b_mean = block.mean(1)
        b_m2 = ((block - b_mean[:, None]) ** 2).sum(1)
        delta = b_mean - mean
        total = count + b_count
        mean = mean + delta * (b_count / total)
        m2 = m2 + b_m2 + delta * delta * (count * b_count / total)
        count = total
    return ChannelStatistics(mean, (m2 / count + eps).sqrt())


def standardize(
    latents: Tensor, statistics: ChannelStatistics, channels: int | None = None
) -> Tensor:
    """``(z - mean_c) / std_c`` per channel, in the latents' dtype and shape.

    Args:
        latents: (B, C, ...) latents or (N, C*S) channel-major rows (then ``channels`` is
            taken from the statistics when not given).
        statistics: from :func:`channel_statistics` (of the reference bank), shape (C,) each.

    Returns:
        A tensor of the latents' shape, dtype and device.
    """
    mean, std = statistics
    if channels is None:
        channels = mean.shape[0]
    x = _as_channels(latents, channels, "latents")
    if mean.shape != (x.shape[1],) or std.shape != (x.shape[1],):
        raise ValueError(
            f"statistics are for {tuple(mean.shape)} / {tuple(std.shape)} channels but the "
            f"latents have {x.shape[1]}; compute them on latents of the same model."
        )
    if not bool((std > 0).all()):
        raise ValueError("statistics.std must be > 0; compute them with eps > 0.")
    m = mean.to(x.device, x.dtype)[None, :, None]
    s = std.to(x.device, x.dtype)[None, :, None]
    return ((x - m) / s).reshape(latents.shape)


def candidate_mse(
    queries: Tensor,
    candidates: Tensor,
    statistics: ChannelStatistics | None = None,
) -> Tensor:
    """Mean squared difference per latent element between each query and its k candidates.

    This is the official code's top-k pick weight: candidate j is drawn with probability
    ``softmax(-MSE)[j]`` (pass the result to ``pick_neighbor(mse, candidates, "softmax")``).
    With ``statistics`` (the ``bn_channel`` variant) both sides are standardised per channel
    first; without, the raw latents are used.

    Args:
        queries: (Q, D) flattened channel-major latents.
        candidates: (Q, k, D) the k candidate neighbours' latents of each query.
        statistics: per-channel statistics of the reference bank, or None.

    Returns:
        (Q, k) float64 MSE, on the queries' device.
    """
    if not isinstance(queries, Tensor) or queries.ndim != 2:
        raise ValueError(
            f"`queries` must be (Q, D) latents, got {getattr(queries, 'shape', None)}."
        )
    if (
        not isinstance(candidates, Tensor)
        or candidates.ndim != 3
        or (candidates.shape[0] != queries.shape[0] or candidates.shape[2] != queries.shape[1])
    ):
        raise ValueError(
            f"`candidates` must be (Q, k, D) = ({queries.shape[0]}, k, {queries.shape[1]}), got "
            f"{getattr(candidates, 'shape', None)}."
        )
    q = queries.detach().to(torch.float64)
    c = candidates.detach().to(queries.device, torch.float64)
    if statistics is not None:
        q = standardize(q, statistics)
        c = standardize(c.reshape(-1, c.shape[2]), statistics).reshape(c.shape)
    diff = c - q[:, None, :]
    return (diff * diff).mean(2)


def topk_weights(
    queries: Tensor,
    candidates: Tensor,
    statistics: ChannelStatistics | None = None,
) -> Tensor:
    """The official top-k pick probabilities ``softmax(-MSE)`` over each query's k candidates.

    Args: as :func:`candidate_mse`.

    Returns:
        (Q, k) float64 probabilities, each row summing to 1.
    """
    return torch.softmax(-candidate_mse(queries, candidates, statistics), dim=1)
