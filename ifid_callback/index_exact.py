"""The exact index: the bank's rows on their device and a chunked matmul search over them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ifid_callback.functional.neighbors import _candidates_per_query, _exact_search


@dataclass
class ExactRows:
    """What an exact search reuses across queries, prepared once at build.

    Attributes:
        vectors: (N, D) the indexed rows, any float dtype (kept as given: not copied when they
            already are on the index's device).
        scales: (N,) per-row norms: 1/||x|| for cosine, ||x||^2 for squared L2.
        ids: (N,) int64 ids by position on the rows' device, or None when ids are positions.
        sorted_ids: ``ids`` sorted (for counting the rows each exclusion leaves), or None.
    """

    vectors: Tensor
    scales: Tensor
    ids: Tensor | None
    sorted_ids: Tensor | None

    @property
    def memory_bytes(self) -> int:
        """Bytes of the rows, their norms and the sorted ids (the ids by position not counted)."""
        held = self.vectors.numel() * self.vectors.element_size()
        held += self.scales.numel() * self.scales.element_size()
        if self.sorted_ids is not None:
            held += self.sorted_ids.numel() * 8
        return held

    def search(
        self, queries: Tensor, k: int, distance: str, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest rows of each of the checked ``queries`` (Q, D), skipping for query i
        the rows whose id is ``exclude[i]``.

        Returns (Q, k) distances ascending and (Q, k) int64 positions, on the rows' device;
        ValueError when some query has fewer than ``k`` rows left after its exclusion.
        """
        # The rows were checked and their norms computed at build: only the queries are new.
        dev = self.vectors.device
        n = len(self.vectors)
        ids = self.ids
        ex = exclude.to(dev) if exclude is not None else None
        if ex is not None:
            if ids is None:
                ids = torch.arange(n, device=dev)
            sorted_ids = self.sorted_ids if self.sorted_ids is not None else ids
            left = int(_candidates_per_query(ex, sorted_ids, presorted=True).min())
            if len(ex) and k > left:
                raise ValueError(
                    f"k={k} but only {left} indexed rows are available to some query after "
                    f"excluding its own id; use k <= {left} or a larger bank."
                )
        return _exact_search(queries.to(dev), self.vectors, self.scales, k, distance, ex, ids, None)
