"""The sampling standard errors of iFID and rFID, from each query's influence on FID."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.functional.uncertainty import frechet_influence

# Fewest queries for which the standard errors are reported.
MIN_QUERIES = 3


class StandardErrors(Extra):
    """``"ifid_std"``, ``"rfid_std"``: the spread of each FID over independent draws of as many
    query images (infinitesimal jackknife, FID units)."""

    key = "uncertainty"
    uses_rows = True

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        assert rows is not None
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
        found = frechet_influence(rows.real, rows.fakes)
        return {f"{name}_std": result.std_error for name, result in found.items()}
