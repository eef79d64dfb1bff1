"""The best evaluation so far (lowest iFID) and each new evaluation's paired difference with it.

Every evaluation scores the same evaluation images, so two evaluations share most of their
sampling noise; the paired standard error of their difference
(:func:`~ifid_callback.functional.paired_difference`) keeps that correlation, where treating
them as independent overstates it several times over. The best evaluation's per-image
influences are kept (and checkpointed) to compare each later evaluation with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ifid_callback.extras.uncertainty import EvaluationInfluences
from ifid_callback.functional.paired import paired_difference
from ifid_callback.functional.uncertainty import FIDInfluence

__all__ = ["VS_BEST_KEYS", "BestEvaluation"]

#: Result keys: this evaluation's iFID minus the best earlier one's, and its paired standard error.
VS_BEST_KEYS = ("ifid_vs_best", "ifid_vs_best_std")


class BestEvaluation:
    """The per-image iFID influences of the evaluation with the lowest iFID so far."""

    def __init__(self) -> None:
        self.influences: EvaluationInfluences | None = None

    def compare_and_keep(self, current: EvaluationInfluences | None) -> dict[str, float]:
        """``{"ifid_vs_best": current - best, "ifid_vs_best_std": its paired SE}`` (FID units;
        negative: better than every earlier evaluation) against the best earlier evaluation,
        then keep ``current`` when its iFID is the lowest so far.

        Empty at the first evaluation (nothing to compare with) and when ``current`` is None
        (no per-image influences: the metric's standard errors are off or too few images).
        """
        if current is None:
            return {}
        best, out = self.influences, {}
        if best is not None:
            diff = paired_difference(current.ifid, best.ifid, current.positions, best.positions)
            out = dict(zip(VS_BEST_KEYS, (float(diff.difference), float(diff.std_error))))
        if best is None or float(current.ifid.value) < float(best.ifid.value):
            # iFID only: rFID's influences are not compared, so they are not kept either.
            self.influences = EvaluationInfluences(current.ifid, None, current.positions)
        return out

    def state(self) -> dict[str, Any] | None:
        """The best evaluation's iFID, influences (N,) and positions (N,) as CPU tensors for a
        checkpoint; None before the first evaluation."""
        if self.influences is None:
            return None
        best = self.influences
        return {
            "ifid": best.ifid.value.clone(),
            "influence": best.ifid.influence.clone(),
            "positions": best.positions.clone(),
        }


def parse_best(saved: Mapping[str, Any] | None) -> EvaluationInfluences | None:
    """The influences in a :meth:`BestEvaluation.state` (None stays None), checked."""
    if saved is None:
        return None
    missing = {"ifid", "influence", "positions"} - set(saved)
    if missing:
        raise ValueError(
            f"The checkpoint's best evaluation lacks {sorted(missing)}; load a state_dict() "
            "saved by IFIDMonitor, or drop its 'best' entry to start a new best."
        )
    value = torch.as_tensor(saved["ifid"], dtype=torch.float64).reshape(())
    influence = torch.as_tensor(saved["influence"], dtype=torch.float64)
    positions = torch.as_tensor(saved["positions"]).long()
    if influence.ndim != 1 or positions.shape != influence.shape:
        raise ValueError(
            f"The checkpoint's best evaluation has influences {tuple(influence.shape)} and "
            f"positions {tuple(positions.shape)}; both must be (N,)."
        )
    return EvaluationInfluences(FIDInfluence(value, influence), None, positions)
