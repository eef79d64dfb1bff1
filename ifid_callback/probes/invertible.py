"""Invertible maps of a VAE's latent space: the positive control of the digits study.

A :class:`WrappedVAE` applies a map after the encoder and its inverse before the decoder, so
its reconstructions, hence its rFID, equal the base VAE's, while the latent space a diffusion
probe sees (and iFID interpolates in) changes. The maps:

* :class:`ChannelRotation`: a seeded orthogonal mix of the channels at every position. An
  isometry: distances, cosines and slerp are unchanged, so it is the null of the series.
* :class:`SmoothWarp`: ``y = z + a s sin(z / s)`` per value, ``0 <= a < 1`` (monotone, smooth):
  bends the latent space, mildly for small ``a``.
* :class:`ValueShuffle`: the value range ``[-r, r)`` is cut into equal bins, and the bins are
  permuted within blocks of ``block`` neighbouring bins (``block = 2``: local swaps; ``block``
  = all bins: global). Values move by whole bins, so nearby latents can land far apart: a
  discontinuous map whose dose grows with the block.
* :class:`PositionShuffle`: a fixed permutation of the latent's values across positions and
  channels, within spatial windows of ``block`` x ``block`` (``block`` = latent side: global).
  An isometry too: iFID with cosine neighbours and slerp is blind to it by construction.

Exactness: :class:`PositionShuffle` (a permutation) is exact, so reconstructions are
bit-identical to the base VAE's. The other maps are computed in float64 and rounded to float32,
so ``inverse(forward(z))`` equals ``z`` up to a few float32 rounding steps of the largest
latent value (:data:`ROUND_TRIP_TOLERANCE`); reconstructions then differ from the base VAE's by
the decoder's response to that, far below anything an FID resolves. An exact float32 bijection
cannot move values between magnitudes (there are more float32 values near 0 than near 1), so a
rotation, warp or value shuffle cannot be exact on float32 latents.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ROUND_TRIP_TOLERANCE",
    "ChannelRotation",
    "LatentMap",
    "PositionShuffle",
    "SmoothWarp",
    "ValueShuffle",
    "WrappedVAE",
    "build_latent_map",
    "round_trip_error",
]

#: Bound on ``max |inverse(forward(z)) - z| / max |z|`` over a batch for the float64 maps:
#: 2**-20, a few float32 rounding steps of the largest latent value.
ROUND_TRIP_TOLERANCE = 2.0**-20


class LatentMap(nn.Module):
    """An invertible map of latents ``(B, C, H, W)``; ``spec()`` rebuilds it."""

    kind: str = ""
    exact: bool = False

    def forward(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def _sub_seed(seed: int, *words: int) -> int:
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])


class ChannelRotation(LatentMap):
    """``y[:, :, i, j] = Q z[:, :, i, j]`` with a seeded Haar-random orthogonal ``Q`` (C x C)."""

    kind = "rotation"

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        self.channels, self.seed = int(channels), int(seed)
        g = torch.Generator().manual_seed(_sub_seed(seed, 1))
        a = torch.randn(channels, channels, generator=g, dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))  # the Haar measure's sign convention
        self.register_buffer("q", q)

    def _mix(self, z: Tensor, matrix: Tensor) -> Tensor:
        out = torch.einsum("dc,bchw->bdhw", matrix.to(z.device), z.double())
        return out.to(z.dtype)

    def forward(self, z: Tensor) -> Tensor:
        return self._mix(z, self.q)

    def inverse(self, y: Tensor) -> Tensor:
        return self._mix(y, self.q.T)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "seed": self.seed}


class SmoothWarp(LatentMap):
    """``y = z + a s sin(z / s)`` elementwise; strictly increasing for ``0 <= a < 1``.

    ``scale`` ``s`` should be the latents' standard deviation (the warp's period is ``2 pi s``).
    The inverse is found by bisection-safeguarded Newton iterations in float64.
    """

    kind = "warp"

    def __init__(self, strength: float, scale: float) -> None:
        super().__init__()
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"strength must be in [0, 1) (monotone warp), got {strength!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.strength, self.scale = float(strength), float(scale)

    def _f(self, z: Tensor) -> Tensor:
        return z + self.strength * self.scale * torch.sin(z / self.scale)

    def forward(self, z: Tensor) -> Tensor:
        return self._f(z.double()).to(z.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        target = y.double()
        a, s = self.strength, self.scale
        # |f(z) - z| <= a s, so the root lies in [y - a s, y + a s].
        lo, hi = target - a * s, target + a * s
        z = target.clone()
        for _ in range(60):
            fz = self._f(z) - target
            lo = torch.where(fz < 0, z, lo)
            hi = torch.where(fz >= 0, z, hi)
            step = z - fz / (1 + a * torch.cos(z / s))
            inside = (step > lo) & (step < hi)
            z = torch.where(inside, step, 0.5 * (lo + hi))
            if bool((fz.abs() <= 1e-15 * (1 + target.abs())).all()):
                break
        return z.to(y.dtype)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "strength": self.strength, "scale": self.scale}


class ValueShuffle(LatentMap):
    """Permute equal-width bins of the value range ``[-r, r)`` within blocks of ``block`` bins.

    Args:
        scale: the latents' standard deviation ``s``; ``r`` is about ``3 s``.
        num_bins: bins over ``[-r, r)``; their width is the power of two nearest to
            ``6 s / num_bins`` and ``r`` is half of ``num_bins`` widths.
        block: bins per block (a divisor of ``num_bins``, >= 2): each block's bins are permuted
            among themselves by a seeded permutation with no fixed point, so every value in the
            range moves. Values outside ``[-r, r)`` are left alone.
        seed: seed of the permutations.
    """

    kind = "shuffle"

    def __init__(self, scale: float, block: int, num_bins: int = 24, seed: int = 0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if block < 2 or num_bins % block:
            raise ValueError(
                f"block must be >= 2 and divide num_bins={num_bins}, got block={block!r}"
            )
        self.scale, self.block, self.num_bins, self.seed = float(scale), block, num_bins, seed
        # A power-of-two bin width puts every bin edge on a float32 number, so a value clamped
        # into its destination bin is binned there again by the inverse.
        self.width = 2.0 ** round(math.log2(6.0 * self.scale / num_bins))
        self.radius = self.width * num_bins / 2
        rng = np.random.default_rng(_sub_seed(seed, 2, block))
        perm = np.arange(num_bins)
        for start in range(0, num_bins, block):
            # A random cyclic shift of a random order: a permutation without fixed points.
            order = rng.permutation(block)
            shifted = np.roll(order, 1)
            perm[start + order] = start + shifted
        self.register_buffer("perm", torch.from_numpy(perm))
        self.register_buffer("inv", torch.from_numpy(np.argsort(perm)))

    def _move(self, v: Tensor, table: Tensor) -> Tensor:
        x = v.double()
        bins = torch.floor((x + self.radius) / self.width)
        inside = (bins >= 0) & (bins < self.num_bins)
        idx = bins.clamp(0, self.num_bins - 1).long()
        dest = table.to(v.device)[idx].double()
        out64 = x + (dest - idx.double()) * self.width
        out = out64.to(v.dtype)
        # Rounding must not carry a value across a bin edge (the inverse would pick the wrong
        # bin): clamp into the destination bin's float32 range.
        lo = (-self.radius + dest * self.width).to(v.dtype)
        hi = torch.nextafter((-self.radius + (dest + 1) * self.width).to(v.dtype), lo)
        out = torch.minimum(torch.maximum(out, lo), hi)
        return torch.where(inside, out, v)

    def forward(self, z: Tensor) -> Tensor:
        return self._move(z, self.perm)

    def inverse(self, y: Tensor) -> Tensor:
        return self._move(y, self.inv)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scale": self.scale,
            "block": self.block,
            "num_bins": self.num_bins,
            "seed": self.seed,
        }


class PositionShuffle(LatentMap):
    """A fixed permutation of the ``C x H x W`` latent values within ``block`` x ``block``
    spatial windows (all channels of a window mix); exact, and an isometry."""

    kind = "positions"
    exact = True

    def __init__(self, shape: tuple[int, int, int] | list[int], block: int, seed: int = 0) -> None:
        super().__init__()
        c, h, w = (int(d) for d in shape)
        if block < 1 or h % block or w % block:
            raise ValueError(f"block must divide the latent's side {h}x{w}, got {block!r}")
        self.shape, self.block, self.seed = (c, h, w), int(block), int(seed)
        rng = np.random.default_rng(_sub_seed(seed, 3, block))
        index = np.arange(c * h * w).reshape(c, h, w)
        perm = index.copy()
        for i in range(0, h, block):
            for j in range(0, w, block):
                cells = index[:, i : i + block, j : j + block].ravel()
                perm[:, i : i + block, j : j + block] = rng.permutation(cells).reshape(
                    c, block, block
                )
        flat = perm.ravel()
        self.register_buffer("perm", torch.from_numpy(flat))
        self.register_buffer("inv", torch.from_numpy(np.argsort(flat)))

    def forward(self, z: Tensor) -> Tensor:
        return z.flatten(1)[:, self.perm.to(z.device)].reshape(z.shape)

    def inverse(self, y: Tensor) -> Tensor:
        return y.flatten(1)[:, self.inv.to(y.device)].reshape(y.shape)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "block": self.block,
            "seed": self.seed,
        }


def build_latent_map(spec: dict[str, Any]) -> LatentMap:
    """The map a ``spec()`` dict describes."""
    kind = spec.get("kind")
    args = {k: v for k, v in spec.items() if k != "kind"}
    classes: dict[str, type[LatentMap]] = {
        "rotation": ChannelRotation,
        "warp": SmoothWarp,
        "shuffle": ValueShuffle,
        "positions": PositionShuffle,
    }
    if kind not in classes:
        raise ValueError(f"unknown latent map kind {kind!r}; known: {sorted(classes)}")
    return classes[kind](**args)


class WrappedVAE(nn.Module):
    """A VAE whose latent space is ``latent_map`` applied to the base VAE's.

    ``encode(x)`` returns ``latent_map(posterior mean)`` (a tensor); ``decode(y)`` decodes
    ``latent_map.inverse(y)`` with the base decoder. Reconstructions equal the base VAE's
    (bit-identical for exact maps, see the module docstring otherwise).
    """

    def __init__(self, vae: nn.Module, latent_map: LatentMap) -> None:
        super().__init__()
        self.vae = vae
        self.latent_map = latent_map

    def encode(self, x: Tensor) -> Tensor:
        out = self.vae.encode(x)
        mean = out.mean if hasattr(out, "mean") and not isinstance(out, Tensor) else out
        return self.latent_map(mean)

    def decode(self, y: Tensor) -> Tensor:
        return self.vae.decode(self.latent_map.inverse(y))


def round_trip_error(latent_map: LatentMap, z: Tensor) -> float:
    """``max |inverse(forward(z)) - z| / max |z|`` (compare with :data:`ROUND_TRIP_TOLERANCE`)."""
    back = latent_map.inverse(latent_map(z))
    return float((back - z).abs().max() / z.abs().max().clamp_min(1e-30))
