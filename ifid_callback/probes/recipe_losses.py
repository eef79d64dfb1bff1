"""The extra training terms of the natural family's recipes, each a differentiable scalar.

* :func:`equivariance_loss`: EQ-VAE-style scale equivariance, the decode of the 2x average-pooled
  latent against the 2x average-pooled image (MSE), so the decoder treats a coarser latent as a
  coarser image.
* :func:`spectral_loss`: the fraction of the latent's energy at or above half the Nyquist
  frequency (2-D DCT per channel; :mod:`ifid_callback.functional.spectrum`), pushing the latent
  towards smooth maps.
* :class:`RandomConvTeacher`: a frozen, seeded random convolutional network whose feature maps,
  pooled to the latent's size, are an alignment target that is not the network that measures FID.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..functional.equivariance import downsample
from ..functional.spectrum import high_frequency_fraction

__all__ = ["RandomConvTeacher", "equivariance_loss", "spectral_loss"]


def equivariance_loss(z: Tensor, x: Tensor, decode: Callable[[Tensor], Tensor]) -> Tensor:
    """``mean((decode(pool2(z)) - pool2(x))^2)`` for latents ``z`` (B, c, h, w) of images ``x``
    (B, C, H, W); ``h`` and ``w`` must be even."""
    return F.mse_loss(decode(downsample(z, 2)), downsample(x, 2))


def spectral_loss(z: Tensor) -> Tensor:
    """Fraction in [0, 1] of the energy of ``z`` (B, c, h, w) at or above half Nyquist (0 for
    1x1 latents, which have no frequency but the mean)."""
    return high_frequency_fraction(z, differentiable=True)


class RandomConvTeacher(nn.Module):
    """Frozen random features: two 3x3 convolutions with ReLU (``width`` and ``2 * width``
    channels, initialised from ``seed``), average-pooled to ``out_size`` x ``out_size``.

    Args:
        in_channels: image channels.
        out_size: side of the latent map the features are aligned to.
        width: channels of the first convolution.
        seed: seeds the weights (the same network on every machine).
    """

    def __init__(self, in_channels: int, out_size: int, width: int = 16, seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.out_size = int(out_size)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        for conv in (self.conv1, self.conv2):
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / fan_in**0.5)
                conv.bias.zero_()
        self.requires_grad_(False)
        self.name = f"random-conv-{width}-s{seed}-to{self.out_size}"

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, 2 * width, out_size, out_size)."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.adaptive_avg_pool2d(h, self.out_size)
