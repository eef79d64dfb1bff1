"""The latent power spectrum (fraction of energy at or above half Nyquist) against hand
computations and scipy's DCT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from ifid_callback.functional.spectrum import (
    dct2,
    dct_matrix,
    high_frequency_fraction,
    high_frequency_mask,
    spectral_energy,
)


def _cosine(n: int, u: int, v: int) -> torch.Tensor:
    """cos(pi u (2i+1) / 2n) cos(pi v (2j+1) / 2n): a single DCT-II basis pattern."""
    i = torch.arange(n, dtype=torch.float64)
    row = torch.cos(math.pi * u * (2 * i + 1) / (2 * n))
    col = torch.cos(math.pi * v * (2 * i + 1) / (2 * n))
    return row[:, None] * col[None, :]


def test_dct_matches_scipy() -> None:
    z = torch.randn(2, 3, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = dct2(z).numpy()
    ref = scipy.fft.dctn(z.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert torch.allclose(dct_matrix(5) @ dct_matrix(5).T, torch.eye(5, dtype=torch.float64))


def test_mask_is_the_band_a_2x_downsample_drops() -> None:
    # 8x8: rows/columns 4..7 are at or above half Nyquist; 2x2: index 1; 1x1: nothing.
    mask = high_frequency_mask(8, 8)
    assert mask.sum() == 64 - 16 and not mask[:4, :4].any() and mask[4:, :].all()
    assert high_frequency_mask(2, 2).tolist() == [[False, True], [True, True]]
    assert high_frequency_mask(1, 1).tolist() == [[False]]


@pytest.mark.parametrize(("u", "v", "expected"), [(1, 2, 0.0), (5, 0, 1.0), (3, 4, 1.0)])
def test_pure_cosine_latent(u: int, v: int, expected: float) -> None:
    z = _cosine(8, u, v).expand(1, 2, 8, 8)
    assert float(high_frequency_fraction(z)) == pytest.approx(expected, abs=1e-12)


def test_mixture_by_hand() -> None:
    # a * low (u=1) + b * high (v=6): energies a^2 |c1|^2 and b^2 |c2|^2; each basis pattern's
    # squared norm on 8x8 is (8/2) * (8/2) = 16 (v=0 would give 8 * 4).
    a, b = 3.0, 2.0
    z = (a * _cosine(8, 1, 1) + b * _cosine(8, 0, 6)).reshape(1, 1, 8, 8)
    energy = spectral_energy(z)
    assert float(energy.total[0]) == pytest.approx(a**2 * 16 + b**2 * 8 * 4)
    assert float(energy.high[0]) == pytest.approx(b**2 * 32)
    assert float(high_frequency_fraction(z)) == pytest.approx(32 * b**2 / (16 * a**2 + 32 * b**2))


def test_total_is_parseval_and_differentiable_version_agrees() -> None:
    z = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    energy = spectral_energy(z)
    assert torch.allclose(energy.total, z.detach().double().pow(2).flatten(1).sum(1))
    soft = high_frequency_fraction(z, differentiable=True)
    soft.backward()
    assert z.grad is not None and float(soft.detach()) == pytest.approx(
        float(high_frequency_fraction(z))
    )


def test_bad_shape_and_zero_latents() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        high_frequency_fraction(torch.zeros(2, 16))
    assert float(high_frequency_fraction(torch.zeros(2, 1, 4, 4))) == 0.0
