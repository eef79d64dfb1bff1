"""What an extra metric is: a small part with its options, its states and its compute.

:class:`~ifid_callback.metric.InterpolatedFID` assembles the extras that are on. An extra either
scores the reconstructions of each batch (its states are float64 sums and int64 counts, summed
over ranks), or looks at the query images and every decode in a feature space of its own
(``scores_decodes``), or works on the per-image feature rows that the metric keeps for all of them
(:class:`PairedRows`). Adding an extra touches neither the others nor the metric's pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class PairedRows:
    """Per-image feature rows of one round, row i of every set from the same query.

    Attributes:
        real: (N, d) float64 features of the query images.
        fakes: ``{"ifid": interpolants, "rfid": reconstructions}`` (N, d) float64 each (``rfid``
            only with ``compute_rfid``).
        positions: (N,) int64 positions of the queries.
    """

    real: Tensor
    fakes: dict[str, Tensor]
    positions: Tensor


class Extra(nn.Module):
    """Base of the extras; subclasses override what they use.

    Attributes:
        key: the constructor argument of ``InterpolatedFID`` that turns it on.
        uses_rows: needs the per-image feature rows at compute.
        scores_reconstructions: scores each batch's reconstructions against the query images.
        scores_latents: scores each batch's query latents (the encode done for iFID).
        scores_decodes: sees the query images (:meth:`score_real`, until its real statistics
            are complete) and every decode (:meth:`score_decodes`: the interpolants, also those
            decoded at compute() without a bank, and the reconstructions).
    """

    key = ""
    uses_rows = False
    scores_reconstructions = False
    scores_latents = False
    scores_decodes = False

    def states(self) -> dict[str, Tensor]:
        """Its metric states, name -> default tensor (all reduced by sum)."""
        return {}

    def real_states(self) -> tuple[str, ...]:
        """Those of its states that are real-image statistics: kept across ``reset()`` with
        ``reset_real_features=False``, part of the metric's ``real_statistics()``."""
        return ()

    def interp_states(self) -> tuple[str, ...]:
        """Those of its states that :meth:`score_decodes` fills from the interpolants (summed
        at compute() over the interpolants decoded then, without a bank)."""
        return ()

    def score_real(self, images: Tensor) -> dict[str, Tensor]:
        """Increments of its real states for the query images (B, C, H, W), as the metric got
        them (in its input range)."""
        return {}

    def score_decodes(self, decoded: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Increments of its states for one batch's decodes, ``{"recon": ..., "interp": ...}``
        (B, C, H, W) each (either may be absent), as the metric's feature network gets them."""
        return {}

    def score(self, reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
        """Increments of its states for one batch: reconstructions and the query images, both
        (B, C, H, W) in the metric's input range (images clamped to it)."""
        return {}

    def score_latents(
        self, latents: Tensor, images: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> dict[str, Tensor]:
        """Increments of its states for one batch: the query latents (B, ...) as encoded for iFID,
        the query images (B, C, H, W) in the metric's input range, and the metric's decoder
        (latents -> images, checked and clamped to the input range)."""
        return {}

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        """Its results (float64 scalars) from its states and, when it uses them, the rows."""
        raise NotImplementedError


def scalar_sum() -> Tensor:
    return torch.tensor(0.0, dtype=torch.float64)


def count() -> Tensor:
    return torch.tensor(0, dtype=torch.long)
