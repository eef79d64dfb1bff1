"""``bank=None``: the queries are their own reference, searched among themselves at compute().

Every query latent of the round (gathered over ranks) is indexed; each rank then decodes the
interpolants of its share of the chunks, and the sums (and per-image rows) are added over ranks.
A query's random choices come from its position, so the result depends neither on the world
size nor on the order of the gathered rows. Pixel-identical queries share one id (their
digests, :mod:`ifid_callback.pixel_identity`), so no copy of an image is another copy's
neighbour; their number is kept in ``metric.last_duplicate_queries``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ifid_callback.batch_terms import decoded_terms
from ifid_callback.distributed import all_reduce_sum, world_and_rank
from ifid_callback.fid_state import cat_state
from ifid_callback.pixel_identity import identity_groups

# Queries decoded per call.
CHUNK = 64


def search_own_queries(metric: Any) -> tuple[dict[str, Tensor], Tensor | None]:
    """For ``metric`` (an :class:`~ifid_callback.metric.InterpolatedFID`): the interpolants' FID sums and, with the per-image extras, their (N, d) float32 feature
    rows in the order of the (gathered) queries."""
    latents = cat_state(metric.query_latents, torch.float32)
    n = latents.shape[0]
    if n < 2:
        raise ValueError(f"Without a bank the queries are their own reference; need >= 2, got {n}.")
    positions = cat_state(metric.query_positions, torch.long).cpu()
    shape = getattr(metric, "_latent_shape", (latents.shape[1],))
    digests = cat_state(metric.query_digests, torch.long, 2)
    if digests.shape[0] != n:  # an internal invariant: say so rather than misidentify
        raise RuntimeError(
            f"{digests.shape[0]} pixel digests for {n} queries; the rows of one round are out "
            "of step (please report this)."
        )
    ids, duplicates = identity_groups(digests.to(latents.device))
    if duplicates == n - 1:
        raise ValueError(
            f"Without a bank the queries are their own reference, but all {n} query images are "
            "the same pixels: no image has a neighbour other than its own copies. Evaluate "
            "distinct images, or pass a bank."
        )
    metric.last_duplicate_queries = duplicates
    try:
        return _search(metric, latents, ids, positions, shape)
    finally:
        # The index holds a copy of every query latent: free it now.
        metric.reference.drop()


def _search(
    metric: Any,
    latents: Tensor,
    ids: Tensor,
    positions: Tensor,
    shape: tuple[int, ...],
) -> tuple[dict[str, Tensor], Tensor | None]:
    n = latents.shape[0]
    # Shaped (N, C, ...) so that bn_channel finds the channels; flat latents (N, D) have one
    # channel per element, as in a bank of such latents.
    metric.refresh_index(latents.reshape(-1, *shape) if len(shape) > 1 else latents[..., None], ids)
    world, rank = world_and_rank() if metric._is_synced else (1, 0)
    d = metric.num_features
    partial = {
        "interp_features_sum": torch.zeros(d, dtype=torch.float64, device=metric.device),
        "interp_features_cov_sum": torch.zeros(d, d, dtype=torch.float64, device=metric.device),
        "interp_num_samples": torch.zeros((), dtype=torch.long, device=metric.device),
    }
    for extra in metric.extras.values():  # further feature spaces' sums of the interpolants
        partial.update(
            {name: torch.zeros_like(getattr(metric, name)) for name in extra.interp_states()}
        )
    rows = None
    if metric._per_image:
        # Each rank fills its chunks' rows; the others stay 0, so a sum over ranks is exact.
        rows = torch.zeros(n, d, dtype=torch.float32, device=metric.device)
    # Chunk c goes to rank c % world.
    for c, start in enumerate(range(0, n, CHUNK)):
        if c % world != rank:
            continue
        part = positions[start : start + CHUNK]
        z = latents[start : start + CHUNK].to(metric.device).reshape(-1, *shape)
        generator = metric._generators(part, "pick")
        z_nn, _ = metric.neighbors(z, exclude=ids[start : start + CHUNK], generator=generator)
        found, found_rows = decoded_terms(metric, z, z_nn, part)
        for key, value in found.items():
            partial[key] = partial[key] + value.to(partial[key].device)
        if rows is not None:
            rows[start : start + z.shape[0]] = found_rows["interp_feature_rows"]
    if world > 1:
        partial = {key: all_reduce_sum(value) for key, value in partial.items()}
        if rows is not None:
            rows = all_reduce_sum(rows)
    return partial, rows
