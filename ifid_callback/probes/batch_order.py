"""The batch order of probe training: a pure function of (seed, step), so a resumed run draws the
same batches as an uninterrupted one."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["BatchOrder"]


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    # A per-(seed, epoch) generator makes the batch order a pure function of the step.
    sub_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(sub_seed))


class BatchOrder:
    """Indices of the batch at any step: consecutive slices of per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = _epoch_permutation(self.n, self.seed, epoch)
        return self._cache[epoch]

    def __call__(self, step: int) -> Tensor:
        pos = step * self.batch_size
        parts, need = [], self.batch_size
        while need > 0:
            epoch, offset = divmod(pos, self.n)
            take = min(need, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + take])
            pos, need = pos + take, need - take
        return torch.cat(parts)
