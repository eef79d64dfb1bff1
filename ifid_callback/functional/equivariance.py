"""The scale-equivariance error of EQ-VAE (Kouzelis et al. 2025): does the decoder map a
downsampled latent to the downsampled image?

For images ``x`` (B, C, H, W) and their latents ``z = E(x)`` (B, c, h, w), both are downsampled by
``factor`` with average pooling (``x_s``, ``z_s``) and ``D(z_s)`` is compared with ``x_s``. The
error is a relative MSE over a set of images::

    sum_i ||D(z_s)_i - x_s_i||^2  /  sum_i ||x_s_i - mean(x_s_i)||^2

the denominator being each downsampled image's squared deviation from its own per-channel mean:
0 is a perfectly equivariant decoder, 1 is as far off as painting each image its mean colour. It
does not depend on the images' value range (``[-1, 1]`` or ``[0, 1]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["EquivarianceSums", "downsample", "equivariance_error", "equivariance_sums"]


class EquivarianceSums(NamedTuple):
    """Per-image sums (float64, shape (B,)); ratio of sums over a set gives the error (they add
    across batches and ranks)."""

    error: Tensor  # ||D(z_s) - x_s||^2 per image
    scale: Tensor  # ||x_s - mean(x_s)||^2 per image, mean per channel


def downsample(x: Tensor, factor: int = 2) -> Tensor:
    """Average-pool the last two axes of ``x`` (B, C, H, W) by ``factor`` (both divisible)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an int >= 2, got {factor!r}")
    if x.ndim != 4:
        raise ValueError(
            f"downsampling needs (B, C, H, W) maps, got {tuple(x.shape)}; reshape token "
            "latents to a spatial map first."
        )
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"a {h}x{w} map cannot be downsampled by {factor}: both sides must be divisible by "
            f"it; use factor={factor} only with latents of at least {factor}x{factor} that it "
            "divides."
        )
    return F.avg_pool2d(x, factor)


def equivariance_sums(
    latents: Tensor,
    images: Tensor,
    decode: Callable[[Tensor], Tensor],
    factor: int = 2,
) -> EquivarianceSums:
    """The per-image error and scale of one batch.

    Args:
        latents: (B, c, h, w) latents of ``images`` (the encode already done for the metric).
        images: (B, C, H, W) the images they came from.
        decode: latents -> images; must take a latent map of ``(h / factor, w / factor)``
            (fully convolutional decoders do) and return images of ``(H / factor, W / factor)``.
        factor: downsampling factor of both.
    """
    if latents.shape[0] != images.shape[0]:
        raise ValueError(
            f"got {latents.shape[0]} latents for {images.shape[0]} images; pass the latents of "
            "exactly these images."
        )
    z_s = downsample(latents, factor)
    x_s = downsample(images, factor).to(torch.float64)
    decoded = decode(z_s)
    if tuple(decoded.shape) != tuple(x_s.shape):
        raise ValueError(
            f"the decoder maps the downsampled latents {tuple(z_s.shape)} to "
            f"{tuple(decoded.shape)}, but the downsampled images are {tuple(x_s.shape)}; the "
            "equivariance error needs a decoder that takes latent maps of any size (fully "
            "convolutional); turn it off for this VAE."
        )
    error = (decoded.to(torch.float64) - x_s).pow(2).flatten(1).sum(1)
    centred = x_s - x_s.mean(dim=(2, 3), keepdim=True)
    return EquivarianceSums(error=error, scale=centred.pow(2).flatten(1).sum(1))


def equivariance_error(
    latents: Tensor,
    images: Tensor,
    decode: Callable[[Tensor], Tensor],
    factor: int = 2,
) -> Tensor:
    """The relative MSE (float64 scalar, >= 0) of one batch (see the module docstring)."""
    sums = equivariance_sums(latents, images, decode, factor)
    scale = sums.scale.sum()
    if scale <= 0:
        raise ValueError(
            "the downsampled images are all flat (each one colour), so the relative error is "
            "undefined; evaluate on images with some structure."
        )
    return sums.error.sum() / scale
