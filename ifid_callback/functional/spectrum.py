"""The latent power spectrum: how much of a latent's energy sits in its high spatial frequencies.

The "diffusability" diagnostic of Skorokhodov et al. (2025): latents whose energy is spread into
high frequencies are harder for a diffusion model to learn. Each channel of a (B, C, H, W)
latent gets an orthonormal 2-D DCT-II (type II, ``norm="ortho"``, as ``scipy.fft.dctn``), so the
squared coefficients sum to the squared values (Parseval). Coefficient ``(u, v)`` has frequency
``u / (2H)`` and ``v / (2W)`` cycles per latent position; Nyquist is 1/2, so a coefficient lies at
or above half the Nyquist frequency when ``u >= H / 2`` or ``v >= W / 2``: exactly the part of
the spectrum a 2x downsampling of the latent cannot hold. The mean (``u = v = 0``) counts as
energy of the lowest frequency.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SpectralEnergy",
    "dct2",
    "dct_matrix",
    "high_frequency_fraction",
    "high_frequency_mask",
    "spectral_energy",
]


class SpectralEnergy(NamedTuple):
    """Per-sample sums of squared DCT coefficients (float64, shape (B,)); ratio of sums over a
    set gives its fraction (they add across batches and ranks)."""

    high: Tensor  # energy at or above half the Nyquist frequency
    total: Tensor  # all the energy (equals the sum of squared latent values)


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device: object = None) -> Tensor:
    """The orthonormal DCT-II matrix ``D`` (n, n): ``D @ x`` is ``scipy.fft.dct(x, norm="ortho")``.

    ``D[k, i] = s_k cos(pi k (2i + 1) / (2n))`` with ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``.
    """
    if n < 1:
        raise ValueError(f"the DCT needs a side of at least 1, got {n}")
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    mat = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    mat[0] /= math.sqrt(2.0)
    return mat.to(dtype=dtype, device=device)  # type: ignore[arg-type]


def _check_latents(z: Tensor) -> None:
    if not isinstance(z, Tensor) or z.ndim != 4:
        raise ValueError(
            f"the latent spectrum needs (B, C, H, W) latent maps, got "
            f"{getattr(z, 'shape', type(z).__name__)}; reshape token latents to a spatial map "
            "first."
        )


def dct2(z: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two axes of ``z`` (B, C, H, W), per channel;
    differentiable, in ``z``'s dtype (float32 or float64)."""
    _check_latents(z)
    h, w = z.shape[-2:]
    dh = dct_matrix(h, z.dtype, z.device)
    dw = dct_matrix(w, z.dtype, z.device)
    return dh @ z @ dw.T


def high_frequency_mask(h: int, w: int, device: object = None) -> Tensor:
    """(h, w) bool: True where ``u >= h / 2`` or ``v >= w / 2`` (at or above half Nyquist)."""
    u = torch.arange(h, device=device).unsqueeze(1) * 2 >= h  # type: ignore[arg-type]
    v = torch.arange(w, device=device).unsqueeze(0) * 2 >= w  # type: ignore[arg-type]
    return u | v


def spectral_energy(z: Tensor) -> SpectralEnergy:
    """Energy per sample of ``z`` (B, C, H, W) at or above half Nyquist, and in total (float64)."""
    coeffs = dct2(z.detach().to(torch.float64))
    power = coeffs.pow(2)
    mask = high_frequency_mask(*z.shape[-2:], device=z.device)
    return SpectralEnergy(high=(power * mask).flatten(1).sum(1), total=power.flatten(1).sum(1))


def high_frequency_fraction(z: Tensor, differentiable: bool = False) -> Tensor:
    """Fraction in [0, 1] of the energy of ``z`` (B, C, H, W) at or above half Nyquist, over the
    whole batch (ratio of sums). ``differentiable=True`` keeps the graph (a training penalty,
    in ``z``'s dtype); otherwise a float64 scalar. All-zero latents have no spectrum: 0."""
    if differentiable:
        power = dct2(z).pow(2)
        mask = high_frequency_mask(*z.shape[-2:], device=z.device).to(power.dtype)
        return (power * mask).sum() / power.sum().clamp_min(torch.finfo(power.dtype).tiny)
    energy = spectral_energy(z)
    total = energy.total.sum()
    return energy.high.sum() / total if total > 0 else torch.zeros((), dtype=torch.float64)
