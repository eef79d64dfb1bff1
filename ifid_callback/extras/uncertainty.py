"""The sampling standard errors of iFID and rFID, from each query's influence on FID, and the
paired comparison of two evaluations on the same images that those influences give."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.functional.paired import PairedDifference, paired_difference
from ifid_callback.functional.uncertainty import (
    FIDInfluence,
    frechet_influence_vectors,
    influence_standard_error,
)

# Fewest queries for which the standard errors are reported.
MIN_QUERIES = 3
# Fewest queries at which they are calibrated. Mean reported SE / empirical std of FID over
# 1000 draws (bench/bench_small_n.py, stand-in features, d = 64 and 256, single FIDs and
# paired differences): 0.51-0.59 at N = 3, 0.62-0.68 at 4, 0.68-0.74 at 5, 0.79-0.86 at 8,
# 0.88-0.95 at 16, 0.94-1.03 at 32; within [0.85, 1.3] from N = 16 on.
CALIBRATED_QUERIES = 16


class EvaluationInfluences(NamedTuple):
    """Each query's influence on iFID and rFID in one evaluation, and the queries' positions.

    The form :func:`~ifid_callback.functional.paired.paired_difference` takes:
    ``paired_difference(now.ifid, before.ifid, now.positions, before.positions)``.

    Attributes:
        ifid: the iFID and its (N,) per-query influences (FID units), float64 CPU tensors.
        rfid: the same for rFID, or None when the metric does not compute rFID.
        positions: (N,) int64 CPU positions of the queries, row i of the influences.
    """

    ifid: FIDInfluence
    rfid: FIDInfluence | None
    positions: Tensor

    def fids(self) -> dict[str, FIDInfluence]:
        """``{"ifid": ..., "rfid": ...}`` (``rfid`` only when present)."""
        out = {"ifid": self.ifid}
        if self.rfid is not None:
            out["rfid"] = self.rfid
        return out


class StandardErrors(Extra):
    """``"ifid_std"``, ``"rfid_std"``: the spread of each FID over independent draws of as many
    query images (infinitesimal jackknife, FID units).

    Keeps the influences of the last round it computed (:attr:`last`) for paired comparisons.
    """

    key = "uncertainty"
    uses_rows = True

    def __init__(self) -> None:
        super().__init__()
        self.last: EvaluationInfluences | None = None

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        assert rows is not None
        self.last = None
        n = rows.real.shape[0]
        if n < MIN_QUERIES:
            # On by default: FID itself is defined from 2 images, so say it rather than fail.
            warnings.warn(
                f"The standard errors of iFID/rFID need at least {MIN_QUERIES} query images, got "
                f"{n}: ifid_std/rfid_std are not reported; evaluate more images or pass "
                "uncertainty=False.",
                UserWarning,
                stacklevel=5,
            )
            return {}
        if n < CALIBRATED_QUERIES:
            # Still reported: logs keep their keys, and a low number is still a lower bound.
            warnings.warn(
                f"The standard errors of iFID/rFID from {n} query images understate the true "
                f"spread (they are calibrated from {CALIBRATED_QUERIES} images on: measured "
                "0.5-0.86 of it below, see bench/bench_small_n.py); evaluate at least "
                f"{CALIBRATED_QUERIES} images (hundreds for a useful FID).",
                UserWarning,
                stacklevel=5,
            )
        found = frechet_influence_vectors(rows.real, rows.fakes)
        self.last = EvaluationInfluences(
            found["ifid"], found.get("rfid"), rows.positions.detach().cpu().long()
        )
        return {
            f"{name}_std": influence_standard_error(result.influence)
            for name, result in found.items()
        }


def latest_influences(metric: Any) -> EvaluationInfluences | None:
    """The per-query influences of ``metric``'s current round (computed now when it has updates
    not computed yet; a collective under DDP, as ``compute()``) or else of its last computed
    round; None when it has none (standard errors off, fewer than 3 queries, nothing computed).

    Args:
        metric: an :class:`~ifid_callback.metric.InterpolatedFID`.
    """
    extra = metric.extras["uncertainty"] if "uncertainty" in metric.extras else None
    if extra is None:
        return None
    if metric.update_count > 0 and metric._computed is None:
        metric.compute()
    return extra.last


def influences(metric: Any) -> EvaluationInfluences:
    """:func:`latest_influences`, or a ValueError that says why there are none and the fix."""
    if "uncertainty" not in metric.extras:
        raise ValueError(
            "Per-image influences come from the standard errors, which are off; build the "
            "metric with uncertainty=True (the default)."
        )
    found = latest_influences(metric)
    if found is None:
        raise ValueError(
            "The metric has no evaluation with per-image influences: call update() with at "
            f"least {MIN_QUERIES} query images (and compute()) first."
        )
    return found


def compare(
    current: EvaluationInfluences, other: EvaluationInfluences | Any
) -> dict[str, PairedDifference]:
    """The paired difference ``current - other`` of iFID (and rFID when both have it), with its
    standard error, over the images both evaluations scored, aligned by position.

    Args:
        current: one evaluation's influences (:func:`influences`).
        other: another evaluation's influences on the same images, or a metric (its
            :func:`influences`).

    Returns:
        ``{"ifid": PairedDifference, "rfid": ...}`` (FID units; negative: ``current`` is lower,
        better).

    Raises:
        ValueError: the two evaluations did not score the same images.
    """
    if not isinstance(other, EvaluationInfluences):
        if not hasattr(other, "extras"):
            raise ValueError(
                "compare() takes another evaluation's influences (metric.influences()) or a "
                f"metric, got {type(other).__name__}."
            )
        other = influences(other)
    mine, theirs = current.fids(), other.fids()
    return {
        name: paired_difference(mine[name], theirs[name], current.positions, other.positions)
        for name in mine
        if name in theirs
    }
