"""Latent interpolation: linear, spherical (slerp) and spatial mask mixing (ours and the authors')."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

InterpolationMethod = Literal["linear", "slerp", "mask", "mask_top_half"]
INTERPOLATIONS: tuple[str, ...] = ("linear", "slerp", "mask", "mask_top_half")

# Below this sin(theta) the two directions are (anti)parallel and slerp's weights are 0/0.
_SLERP_EPS = 1e-6


def interpolate(
    z: Tensor,
    z_nn: Tensor,
    method: InterpolationMethod = "slerp",
    alpha: float = 0.5,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Interpolate each latent towards its neighbour.

    Args:
        z: latents, shape (B, ...), any floating dtype.
        z_nn: neighbour latents, same shape, dtype and device as ``z``.
        method: ``"linear"`` gives ``(1 - alpha) * z + alpha * z_nn``. ``"slerp"`` interpolates
            the per-sample flattened vectors along the great circle: the angle comes from the
            normalised vectors, the weights ``sin((1-alpha) theta) / sin(theta)`` and
            ``sin(alpha theta) / sin(theta)`` are applied to the un-normalised vectors, and it
            falls back to linear where ``sin(theta) < 1e-6`` (parallel or opposite vectors).
            ``"mask"`` takes ``round(alpha * P)`` of the P spatial positions from the neighbour
            (all channels of a position together; for (B, D) latents each entry is a position),
            chosen at random per sample with ``generator``. ``"mask_top_half"`` is the mask of the
            authors' code: the top half of the rows from the neighbour, the rest from ``z``, the
            same for every sample and ``alpha`` ignored. Rows are the height H of (B, C, H, W)
            latents (rows ``0 .. H//2 - 1``, all channels and columns; an odd H gives the
            neighbour the smaller half), the tokens L of (B, L, D) sequences (tokens
            ``0 .. L//2 - 1``, all features), as there; (B, D) vectors take entries
            ``0 .. D//2 - 1`` by the same rule (the authors' code has no (B, D) case).
        alpha: interpolation weight in [0, 1]; 0 returns ``z``, 1 returns ``z_nn``
            (``"mask_top_half"`` checks it and ignores it).
        generator: random source for ``"mask"`` (unused by the other methods): one generator
            for the batch, or a sequence of B generators, one per sample, so that a sample's mask
            depends only on its own generator (not on the batch it is in).

    Returns:
        Interpolated latents with the shape, dtype and device of ``z``.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {method!r}.")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    if z.shape != z_nn.shape:
        raise ValueError(
            f"z and z_nn must have the same shape, got {tuple(z.shape)} and {tuple(z_nn.shape)}."
        )
    if z.dtype != z_nn.dtype or z.device != z_nn.device:
        raise ValueError(
            f"z and z_nn must share dtype and device, got {z.dtype}/{z.device} and "
            f"{z_nn.dtype}/{z_nn.device}; convert one with .to()."
        )
    if z.ndim < 2:
        raise ValueError(f"latents must be batched, shape (B, ...), got {tuple(z.shape)}.")
    if method == "linear":
        return torch.lerp(z, z_nn, alpha)
    if method == "slerp":
        return _slerp(z, z_nn, alpha)
    if method == "mask_top_half":
        return _top_half_mix(z, z_nn)
    return _mask_mix(z, z_nn, alpha, generator)


def _slerp(z: Tensor, z_nn: Tensor, alpha: float) -> Tensor:
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    a = z.reshape(z.shape[0], -1).to(work)
    b = z_nn.reshape(z.shape[0], -1).to(work)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin_theta = torch.sin(theta)
    degenerate = sin_theta < _SLERP_EPS
    safe_sin = torch.where(degenerate, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(
        degenerate, torch.full_like(theta, 1.0 - alpha), torch.sin((1 - alpha) * theta) / safe_sin
    )
    w1 = torch.where(degenerate, torch.full_like(theta, alpha), torch.sin(alpha * theta) / safe_sin)
    out = w0[:, None] * a + w1[:, None] * b
    return out.reshape(z.shape).to(z.dtype)


def _mask_mix(
    z: Tensor,
    z_nn: Tensor,
    alpha: float,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> Tensor:
    batch = z.shape[0]
    # Positions are the spatial sites of (B, C, *spatial) latents, or entries of (B, D) vectors.
    spatial = z.shape[2:] if z.ndim > 2 else z.shape[1:]
    positions = int(torch.Size(spatial).numel())
    taken = int(round(alpha * positions))
    if generator is None or isinstance(generator, torch.Generator):
        scores = torch.rand(batch, positions, generator=generator, device="cpu")
    else:
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} latents; pass one each.")
        scores = torch.stack([torch.rand(positions, generator=g) for g in generator])
    order = scores.argsort(dim=1)
    mask = torch.zeros(batch, positions, dtype=torch.bool)
    mask.scatter_(1, order[:, :taken], True)
    mask = mask.to(z.device)
    if z.ndim > 2:
        mask = mask.reshape(batch, 1, *spatial)
    else:
        mask = mask.reshape(z.shape)
    return torch.where(mask, z_nn, z)


def _top_half_mix(z: Tensor, z_nn: Tensor) -> Tensor:
    if z.ndim > 4:
        raise ValueError(
            f"mask_top_half takes (B, C, H, W), (B, L, D) or (B, D) latents, got "
            f"{tuple(z.shape)}; use interpolation='mask' for latents with more dimensions."
        )
    # The authors' rule: along the height of image latents, else along the first dimension.
    dim = 2 if z.ndim == 4 else 1
    rows = torch.arange(z.shape[dim], device=z.device) < z.shape[dim] // 2
    shape = [1] * z.ndim
    shape[dim] = z.shape[dim]
    return torch.where(rows.reshape(shape), z_nn, z)
