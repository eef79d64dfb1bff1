"""The study's real-image features through the shared statistics cache, and its gFID reference
as an ADM-style ``.npz``.

A study keeps its own features under ``<out>/real``; with a statistics cache
(:mod:`~ifid_callback.stats_cache`) a new study on the same images with the same feature network
reads them from there instead of featurising the images again. Entries are keyed by the images'
pixels (one loading pass), the network's identity and the image size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..functional.frechet import statistics_of
from ..stats_cache import (
    StatsCache,
    images_digest,
    network_identity,
    save_adm_npz,
    stats_key,
)

__all__ = ["cached_feature_rows", "write_reference_npz"]


def cached_feature_rows(
    cache: StatsCache | None,
    batches: Callable[[], Iterable[Tensor]],
    feature: nn.Module,
    out: np.ndarray,
    extract: Callable[[], np.ndarray],
) -> bool:
    """Fill ``out`` (N, d) with the features of the images ``batches()`` yields, from the cache
    when it holds them, else by ``extract()`` (which fills ``out``) and then stored. Returns
    whether they came from the cache."""
    if cache is None:
        extract()
        return False
    content, count = images_digest(batches())
    key = stats_key(
        content=content,
        num_images=count,
        order="dataset order",
        network=network_identity(feature),
        kind="probe feature rows",
    )
    found = cache.load(key, need_rows=True)
    rows = found["real_feature_rows"] if found is not None else None
    if rows is not None and tuple(rows.shape) == tuple(out.shape):
        out[:] = rows.numpy()
        return True
    extract()
    f = torch.from_numpy(np.asarray(out, dtype=np.float64))
    stats = {
        "real_features_sum": f.sum(0),
        "real_features_cov_sum": f.T @ f,
        "real_num_samples": torch.tensor(f.shape[0]),
        "real_feature_rows": torch.from_numpy(np.asarray(out, dtype=np.float32)),
        "real_row_positions": torch.arange(f.shape[0]),
    }
    cache.save(key, stats, {"kind": "probe feature rows", "content": content, "n": count})
    return False


def write_reference_npz(features: np.ndarray, path: Path) -> Path:
    """The gFID reference's ``mu`` (d,) and ``sigma`` (d, d) in ADM's ``.npz`` layout, from its
    feature rows (N, d); :func:`~ifid_callback.probes.gfid.gfid` takes the file as reference."""
    mu, sigma = statistics_of(torch.as_tensor(np.asarray(features), dtype=torch.float64))
    return save_adm_npz(path, mu, sigma)
