"""How old the bank's neighbours are: ages of the rows an evaluation interpolated with, and a
one-time warning when they are older than the user allows.

A training-time bank holds latents encoded by older weights than the ones evaluated (unless
``exact_bank`` re-encodes it); the age of a neighbour is the evaluation step minus the step at
which its row entered the bank.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["AGE_KEYS", "NeighborAges"]

#: Result entries describing the neighbours' ages (training steps), logged next to iFID.
AGE_KEYS = ("neighbor_age_median", "neighbor_age_p90")


class NeighborAges:
    """Summarises neighbour ages and warns once when the median exceeds ``max_neighbor_age``.

    Args:
        max_neighbor_age: steps; None (default) never warns.
    """

    def __init__(self, max_neighbor_age: int | None = None) -> None:
        if max_neighbor_age is not None and (
            isinstance(max_neighbor_age, bool)
            or not isinstance(max_neighbor_age, int)
            or max_neighbor_age < 0
        ):
            raise ValueError(
                f"max_neighbor_age must be a non-negative integer (steps) or None, got "
                f"{max_neighbor_age!r}."
            )
        self.max_neighbor_age = max_neighbor_age
        self.warned = False

    def summarize(self, steps: Tensor, step: int) -> dict[str, float]:
        """``{"neighbor_age_median", "neighbor_age_p90"}`` in steps from the (n,) insertion
        steps of the neighbours used at training step ``step``; rows of unknown step (-1) are
        left out, and nothing is returned when none is known."""
        known = steps[steps >= 0].to(torch.float64)
        if known.numel() == 0:
            return {}
        ages = (float(step) - known).clamp(min=0.0)
        median = float(torch.quantile(ages, 0.5))
        out = {"neighbor_age_median": median, "neighbor_age_p90": float(torch.quantile(ages, 0.9))}
        limit = self.max_neighbor_age
        if limit is not None and median > limit and not self.warned:
            self.warned = True
            warnings.warn(
                f"The bank's neighbours are old: median age {median:g} steps at step {step}, "
                f"over max_neighbor_age={limit}. iFID interpolates with latents of older encoder "
                "weights; use a smaller bank_capacity or exact_bank=True (re-encodes the bank at "
                "each index refresh).",
                stacklevel=3,
            )
        return out
