"""The sampling standard error of gFID (generated samples against a reference set) and the paired
difference of two probes' gFIDs whose samples share their noise (common random numbers).

gFID compares two *independent* sets of different sizes: ``n_g`` generated samples and ``n_r``
reference images. Its infinitesimal jackknife is the one iFID uses
(:func:`~ifid_callback.functional.uncertainty.frechet_influence_vectors`), split by side:
moving weight onto generated sample j gives the influence

``IF_j = 2 b_j.(mu_g - mu_r) + (|b_j|^2 - tr S_g) - (b_j^T G b_j - T)``

with ``b_j = y_j - mu_g``, ``T = tr (S_r^1/2 S_g S_r^1/2)^1/2`` and ``G = S_r^1/2 (S_r^1/2 S_g
S_r^1/2)^-1/2 S_r^1/2`` (population covariances), and the reference side is the same with the
roles swapped. iFID's paired influence of query i is exactly ``IF_ref(x_i) + IF_gen(y_i)`` when both
sets have the same rows (a test checks this against ``frechet_influence_vectors``); here each side
gets its own standard error ``sqrt(sum IF^2) / n``
(:func:`~ifid_callback.functional.uncertainty.influence_standard_error`).

``std_error`` treats the reference as fixed: every VAE of a study is scored against the same
reference images, so a study's comparisons are conditional on that one draw, which moves every
gFID in the same direction (to first order by the same amount for VAEs that generate alike).
``std_error_reference`` is the reference's own term, for a gFID quoted on its own
(``sqrt(std_error^2 + std_error_reference^2)``). Computed in feature space, ``O(n d^2 + d^3)``,
so 50K Inception samples cost a few ``2048 x 2048`` eigendecompositions.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..functional.paired import paired_difference
from ..functional.uncertainty import influence_standard_error

__all__ = [
    "GFIDInfluence",
    "gfid_influence",
    "gfid_with_error",
    "paired_gfid_difference",
    "seed_fields",
    "seed_summary",
]


class GFIDInfluence(NamedTuple):
    """A gFID and each sample's influence on it (float64 CPU tensors, FID units).

    Attributes:
        value: the FID (unbiased covariances, as :func:`~ifid_callback.probes.fid.fid_from_features`).
        generated: (n_g,) influence of each generated sample (reference held fixed); sums to 0.
        reference: (n_r,) influence of each reference row (generated set held fixed); sums to 0.
    """

    value: Tensor
    generated: Tensor
    reference: Tensor

    @property
    def std_error(self) -> float:
        """Sampling standard error over draws of the generated samples (reference fixed)."""
        return float(influence_standard_error(self.generated))

    @property
    def std_error_reference(self) -> float:
        """Standard error from the draw of the reference images (shared by every VAE)."""
        return float(influence_standard_error(self.reference))


def _psd_sqrt(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _one_side(b: Tensor, s_own: Tensor, s_other: Tensor, diff: Tensor) -> tuple[Tensor, Tensor]:
    """Influences of the centred rows ``b`` of one set, the other set's statistics held fixed.

    ``diff`` is ``mu_own - mu_other``. Returns ``(influence, T)``.
    """
    root = _psd_sqrt(s_other)
    w, v = torch.linalg.eigh(root @ s_own @ root)
    w = w.clamp_min(0)
    # Directions of M below rounding (rank-deficient covariances) carry no mass to move.
    keep = w > w.max() * 16 * w.shape[0] * torch.finfo(w.dtype).eps
    t = w[keep].sqrt().sum()
    half = (root @ v[:, keep]) * w[keep].rsqrt().sqrt()  # G = half @ half.T
    quad = ((b @ half) ** 2).sum(1)
    b_sq = (b * b).sum(1)
    influence = 2 * (b @ diff) + (b_sq - b_sq.mean()) - (quad - t)
    return influence, t


def gfid_influence(generated: np.ndarray | Tensor, reference: np.ndarray | Tensor) -> GFIDInfluence:
    """gFID of ``generated`` ``(n_g, d)`` against ``reference`` ``(n_r, d)`` with each row's
    influence on it (see the module docstring); both sets need at least 3 finite rows."""
    y = torch.as_tensor(np.asarray(generated), dtype=torch.float64)
    x = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    for name, arr in (("generated", y), ("reference", x)):
        if arr.ndim != 2 or arr.shape[0] < 3:
            raise ValueError(f"{name} features must be (n >= 3, d), got {tuple(arr.shape)}")
        if not torch.isfinite(arr).all():
            raise ValueError(f"{name} features contain NaN or Inf")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature widths differ: generated {y.shape[1]}, reference {x.shape[1]}")
    shift = x.mean(0)  # a common shift changes nothing and keeps sums well conditioned
    x, y = x - shift, y - shift
    mx, my = x.mean(0), y.mean(0)
    a, b = x - mx, y - my
    sx, sy = a.T @ a / a.shape[0], b.T @ b / b.shape[0]
    inf_y, _ = _one_side(b, sy, sx, my - mx)
    inf_x, _ = _one_side(a, sx, sy, mx - my)
    from .fid import fid_from_features

    value = fid_from_features(y + shift, x + shift)
    return GFIDInfluence(torch.tensor(value, dtype=torch.float64), inf_y, inf_x)


def gfid_with_error(
    generated: np.ndarray | Tensor, reference: np.ndarray | Tensor
) -> dict[str, float]:
    """``{"gfid", "gfid_se", "gfid_se_reference", "num_samples"}`` of one sample set (see
    :class:`GFIDInfluence`: ``gfid_se`` holds the reference fixed)."""
    found = gfid_influence(generated, reference)
    return {
        "gfid": float(found.value),
        "gfid_se": found.std_error,
        "gfid_se_reference": found.std_error_reference,
        "num_samples": int(found.generated.shape[0]),
    }


def paired_gfid_difference(
    a: tuple[float, Tensor | np.ndarray], b: tuple[float, Tensor | np.ndarray]
) -> tuple[float, float]:
    """``gFID_a - gFID_b`` and its standard error, for samples paired by index.

    ``a`` and ``b`` are ``(gfid, generated influences)`` of two probes sampled with the same
    noise (the same probe seed, so row j of each starts from the same noise draw): the
    difference's standard error is the infinitesimal jackknife over those shared draws,
    :func:`~ifid_callback.functional.paired.paired_difference`. The reference is common to both
    and cancels.
    """
    found = paired_difference(
        (float(a[0]), torch.as_tensor(np.asarray(a[1]), dtype=torch.float64)),
        (float(b[0]), torch.as_tensor(np.asarray(b[1]), dtype=torch.float64)),
    )
    return float(found.difference), float(found.std_error)


def seed_summary(values: list[float], std_errors: list[float]) -> dict[str, Any]:
    """Mean gFID over probe seeds, its sampling standard error, and the spread between seeds.

    Returns ``{"mean", "se" (sampling standard error of the mean: ``sqrt(sum se_s^2) / S``),
    "seed_std" (sample std of the per-seed values; None for one seed: probe training plus
    sampling noise), "sampling_se" (root-mean-square per-seed standard error: the part of
    seed_std that sampling alone explains)}``.
    """
    v = np.asarray(values, dtype=np.float64)
    se = np.asarray(std_errors, dtype=np.float64)
    if len(v) < 1 or len(se) != len(v):
        raise ValueError(f"need one standard error per value, got {len(v)} and {len(se)}")
    return {
        "mean": float(v.mean()),
        "se": float(math.sqrt(np.sum(se**2)) / len(se)),
        "seed_std": float(v.std(ddof=1)) if len(v) > 1 else None,
        "sampling_se": float(math.sqrt(np.mean(se**2))),
    }


def seed_fields(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """A study row's gFID noise from its probes' results (each with ``gfid``, ``gfid_se``,
    ``gfid_se_reference``, ``gfid_heldout``, ``gfid_heldout_se``).

    ``gfid_se`` is the sampling standard error of the seed mean ``gfid`` (reference fixed),
    ``gfid_seed_std`` the spread of the per-seed gFIDs (None for one seed), ``gfid_sampling_se``
    the typical per-seed standard error; per-seed lists end in ``_seeds``.
    """
    main = seed_summary([s["gfid"] for s in seeds], [s["gfid_se"] for s in seeds])
    held = seed_summary([s["gfid_heldout"] for s in seeds], [s["gfid_heldout_se"] for s in seeds])
    return {
        "gfid_se": main["se"],
        "gfid_seed_std": main["seed_std"],
        "gfid_sampling_se": main["sampling_se"],
        "gfid_se_seeds": [float(s["gfid_se"]) for s in seeds],
        "gfid_se_reference": float(np.mean([s["gfid_se_reference"] for s in seeds])),
        "gfid_heldout_se": held["se"],
        "gfid_heldout_seed_std": held["seed_std"],
    }
