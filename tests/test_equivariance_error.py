"""The EQ-VAE scale-equivariance error against hand computations with stand-in VAEs."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ifid_callback.functional.equivariance import (
    downsample,
    equivariance_error,
    equivariance_sums,
)


def test_identity_vae_is_exactly_equivariant() -> None:
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(equivariance_error(x, x, lambda z: z)) == 0.0


def test_average_pool_vae_by_hand() -> None:
    # Encoder: 2x average pool; decoder: 2x nearest upsampling. On a 4x4 image the downsampled
    # latent is the image's 1x1 mean m, decoded to a 2x2 of m; the 2x-downsampled image is the
    # 2x2 of block means b. Error = sum (b - m)^2, scale = sum (b - mean b)^2 = the same: 1.0.
    x = torch.tensor(
        [[1.0, 3.0, 0.0, 0.0], [5.0, 7.0, 0.0, 0.0], [2.0, 2.0, 4.0, 4.0]] + [[2.0] * 4]
    )
    x = x.reshape(1, 1, 4, 4)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z, scale_factor=2, mode="nearest")

    z = F.avg_pool2d(x, 2)
    sums = equivariance_sums(z, x, decode)
    blocks = torch.tensor([4.0, 0.0, 2.0, 3.0])  # block means (top-left, top-right, ...)
    m = blocks.mean()
    assert float(sums.error[0]) == pytest.approx(float(((blocks - m) ** 2).sum()))
    assert float(sums.scale[0]) == pytest.approx(float(((blocks - m) ** 2).sum()))
    assert float(equivariance_error(z, x, decode)) == pytest.approx(1.0)


def test_offset_decoder_by_hand_and_range_invariance() -> None:
    # Identity VAE whose decoder adds 0.5: error 0.25 per pixel; scale by hand.
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    xs = downsample(x)  # [[2.5, 4.5], [10.5, 12.5]]
    scale = float(((xs - xs.mean()) ** 2).sum())  # mean 7.5: 25 + 9 + 9 + 25
    assert scale == pytest.approx(68.0)
    err = equivariance_error(x, x, lambda z: z + 0.5)
    assert float(err) == pytest.approx(4 * 0.25 / 68.0)
    # Images and decodes mapped to another range by the same affine map give the same error.
    err2 = equivariance_error(2 * x - 1, 2 * x - 1, lambda z: z + 1.0)
    assert float(err2) == pytest.approx(float(err))


def test_errors_name_the_problem() -> None:
    x = torch.zeros(1, 1, 6, 6)
    with pytest.raises(ValueError, match="divisible"):
        equivariance_sums(torch.zeros(1, 1, 3, 3), x, lambda z: z)
    with pytest.raises(ValueError, match="fully convolutional"):
        equivariance_sums(x, x, lambda z: torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match="flat"):
        equivariance_error(x, x, lambda z: z)
