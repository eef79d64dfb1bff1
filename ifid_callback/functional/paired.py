"""The difference of two FID evaluations on the same query images, with its paired standard error.

Every evaluation of a training run scores the same evaluation images, so the sampling noise of
two evaluations is strongly correlated: most of it comes from which images were drawn, and that
draw is shared. Treating the two numbers as independent (``sqrt(se_a^2 + se_b^2)``) then
overstates the noise of their difference, often several times over. The infinitesimal jackknife
of the difference uses each image's influence on both FIDs: the standard error of ``a - b`` is
``sqrt(sum_i (IF_a,i - IF_b,i)^2) / N`` over the N shared images, so the shared part cancels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ifid_callback.functional.uncertainty import FIDInfluence, influence_standard_error


class PairedDifference(NamedTuple):
    """The difference ``a - b`` of two evaluations and its standard error.

    Attributes:
        difference: ``value_a - value_b`` in FID units, a float64 0-d CPU tensor.
        std_error: its sampling standard error over draws of the shared query images, a float64
            0-d CPU tensor, >= 0.
    """

    difference: Tensor
    std_error: Tensor


def _evaluation(name: str, found: FIDInfluence | tuple[float | Tensor, Tensor]) -> FIDInfluence:
    """Check one ``(value, influence)`` pair; return it as float64 CPU tensors."""
    if not isinstance(found, tuple) or len(found) != 2:
        raise ValueError(
            f"`{name}` must be a (value, influence) pair such as a FIDInfluence from "
            f"frechet_influence_vectors, got {type(found).__name__}."
        )
    value, influence = found
    value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if value.numel() != 1 or not math.isfinite(float(value)):
        raise ValueError(f"`{name}` value must be one finite number, got {value.tolist()}.")
    if not isinstance(influence, Tensor) or influence.ndim != 1:
        shape = tuple(influence.shape) if isinstance(influence, Tensor) else type(influence)
        raise ValueError(f"`{name}` influence must be a (N,) tensor, got {shape}.")
    influence = influence.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(influence).all()):
        raise ValueError(f"`{name}` influence holds NaN or Inf.")
    return FIDInfluence(value.reshape(()), influence)


def _positions(name: str, positions: Tensor, n: int) -> Tensor:
    """Check one evaluation's (N,) image positions or ids: integers, one per row, no repeats."""
    if not isinstance(positions, Tensor) or positions.ndim != 1 or positions.shape[0] != n:
        shape = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions)
        raise ValueError(f"`{name}` must be a ({n},) tensor, one per influence, got {shape}.")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise ValueError(f"`{name}` must hold integer positions or ids, got {positions.dtype}.")
    positions = positions.detach().to("cpu", torch.int64)
    if torch.unique(positions).shape[0] != n:
        raise ValueError(f"`{name}` repeats an image; each image must appear once.")
    return positions


def _aligned_orders(positions_a: Tensor, positions_b: Tensor) -> tuple[Tensor, Tensor]:
    """Row orders of a and b that put the same image at the same place (sorted by position)."""
    order_a, order_b = positions_a.argsort(), positions_b.argsort()
    sorted_a, sorted_b = positions_a[order_a], positions_b[order_b]
    if not torch.equal(sorted_a, sorted_b):
        only_a = sorted_a[~torch.isin(sorted_a, sorted_b)]
        only_b = sorted_b[~torch.isin(sorted_b, sorted_a)]
        raise ValueError(
            f"The two evaluations cover different images: {only_a.numel()} positions only in a "
            f"(e.g. {only_a[:5].tolist()}), {only_b.numel()} only in b (e.g. "
            f"{only_b[:5].tolist()}). A paired difference needs both evaluations on the same "
            "images; evaluate both on the same evaluation set."
        )
    return order_a, order_b


def paired_difference(
    a: FIDInfluence | tuple[float | Tensor, Tensor],
    b: FIDInfluence | tuple[float | Tensor, Tensor],
    positions_a: Tensor | None = None,
    positions_b: Tensor | None = None,
) -> PairedDifference:
    r"""The difference ``a - b`` of two FIDs on the same query images and its standard error.

    With per-image influences :math:`\mathrm{IF}^a_i, \mathrm{IF}^b_i` of the two FIDs over the
    same N images (:func:`~ifid_callback.functional.frechet_influence_vectors`), the standard
    error is :math:`\sqrt{\sum_i (\mathrm{IF}^a_i - \mathrm{IF}^b_i)^2} / N`: the infinitesimal
    jackknife of the difference, which keeps the correlation the shared images put between the
    two evaluations. Calibrated against the spread of the difference over repeated draws of the
    images (``bench/bench_paired.py``); the independent rule ``sqrt(se_a^2 + se_b^2)``
    overstates it whenever the two evaluations share most of their noise.

    Rows are matched by image: without positions, row i of ``a`` and of ``b`` must come from the
    same image (same N, same order); with ``positions_a`` and ``positions_b`` (each evaluation's
    query positions or image ids, e.g. the metric's per-image positions, whatever order its
    ranks gathered them in), rows are aligned by them, and both must name the same images.

    Args:
        a: ``(value, influence)`` of the first evaluation (a
            :class:`~ifid_callback.functional.uncertainty.FIDInfluence`): a finite FID and its
            (N,) finite influences, N >= 2.
        b: the same for the second evaluation, over the same N images.
        positions_a: optional (N,) integer positions or ids of ``a``'s rows, no repeats.
        positions_b: the same for ``b``; give both or neither.

    Returns:
        :class:`PairedDifference` ``(difference, std_error)``: ``value_a - value_b`` (negative
        when ``a`` is the lower, better FID) and its standard error, float64 0-d CPU tensors.

    Raises:
        ValueError: malformed input, different image counts, one set of positions without the
            other, or positions naming different images.
    """
    a, b = _evaluation("a", a), _evaluation("b", b)
    n = a.influence.shape[0]
    if b.influence.shape[0] != n:
        raise ValueError(
            f"a has influences for {n} images but b for {b.influence.shape[0]}; a paired "
            "difference needs both evaluations on the same images."
        )
    if n < 2:
        raise ValueError(f"A paired standard error needs at least 2 images, got {n}.")
    if (positions_a is None) != (positions_b is None):
        raise ValueError(
            "Give positions for both evaluations or for neither: rows cannot be aligned by "
            "the positions of one evaluation alone."
        )
    influence_a, influence_b = a.influence, b.influence
    if positions_a is not None and positions_b is not None:
        order_a, order_b = _aligned_orders(
            _positions("positions_a", positions_a, n), _positions("positions_b", positions_b, n)
        )
        influence_a, influence_b = influence_a[order_a], influence_b[order_b]
    return PairedDifference(a.value - b.value, influence_standard_error(influence_a - influence_b))
