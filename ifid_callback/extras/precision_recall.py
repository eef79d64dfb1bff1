"""The k-NN manifold precision and recall of the interpolants against the real images."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.functional.knn_manifold import precision_recall

# Neighbourhood size (Kynkäänniemi et al.).
K = 3


class ManifoldPrecisionRecall(Extra):
    """``"iprecision"``, ``"irecall"``: fractions in [0, 1]; needs more than ``K`` queries."""

    key = "precision_recall"
    uses_rows = True

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        assert rows is not None
        n = rows.real.shape[0]
        if n <= K:
            raise ValueError(
                f"Precision and recall (k={K}) need at least {K + 1} query images, got {n}; "
                "evaluate more images or pass precision_recall=False."
            )
        result = precision_recall(rows.real, rows.fakes["ifid"], k=K)
        return {"iprecision": result.precision, "irecall": result.recall}
