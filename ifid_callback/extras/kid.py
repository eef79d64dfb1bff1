"""The Kernel Inception Distance of the interpolants and of the reconstructions, each paired row by
row with its own query image."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.functional.kid import DEFAULT_SUBSET_SIZE, kernel_inception_distances


class KernelDistance(Extra):
    """``"ikid"``, ``"rkid"`` and their subset spreads ``"ikid_std"``, ``"rkid_std"``.

    Row i of the interpolants and of the reconstructions is made from query i, so the sets are
    paired: the estimate leaves each matched pair out of the cross term (``paired=True`` of
    :func:`~ifid_callback.functional.kid.kernel_inception_distances`), which keeps it unbiased at
    any N. Counting the matched pairs, as an estimator for independent sets does, biases KID low
    by several times its value at N = 32 (it goes negative).

    Args:
        seed: seed of the subset draws.
    """

    key = "kid"
    uses_rows = True

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        assert rows is not None
        n = rows.real.shape[0]
        # All subsets hold every row when N <= 1000: one subset gives the same numbers.
        subsets = 1 if n <= DEFAULT_SUBSET_SIZE else 100
        fakes = {name[0] + "kid": value for name, value in rows.fakes.items()}
        generator = torch.Generator().manual_seed(self.seed)
        found = kernel_inception_distances(
            rows.real, fakes, subsets=subsets, generator=generator, paired=True
        )
        out: dict[str, Tensor] = {}
        for name, result in found.items():
            out[name] = result.mean
            out[f"{name}_std"] = result.std
        return out
