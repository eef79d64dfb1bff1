"""Exact nearest-neighbour search over a bank of latents, and the top-k pick of one neighbour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = ["nearest_neighbors", "pick_neighbor"]

_DISTANCES = ("cosine", "sqeuclidean")
_PICKS = ("uniform", "softmax")

# Working-memory target of one search step (bank chunk cast to float32 plus the distance block).
_STEP_BYTES = 256 * 2**20
# Up to this many queries per step the distance block is computed as (bank rows, queries) and
# ranked through its transpose: 1.4x faster at 8-16 queries on CPU, slower from ~64 on.
_FEW_QUERIES = 32
# Chunk of the one pass over the bank that computes its per-row norms.
_SCALE_CHUNK_BYTES = 4 * 2**20


def _check_matrix(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D (rows, dim), got shape {tuple(x.shape)}; "
            "flatten each latent with `z.reshape(len(z), -1)`."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must have a floating dtype, got {x.dtype}; cast it with `.float()`."
        )
    return x


def _check_finite(name: str, x: Tensor) -> None:
    # In chunks: torch.isfinite materialises |x| and masks, several times the checked rows.
    step = max(1, _SCALE_CHUNK_BYTES // (4 * max(x.shape[1], 1)))
    for r0 in range(0, x.shape[0], step):
        bad = ~torch.isfinite(x[r0 : r0 + step])
        if bool(bad.any()):
            row = r0 + int(bad.any(dim=1).nonzero()[0, 0])
            raise ValueError(
                f"`{name}` contains NaN or Inf (first at row {row}); "
                "remove or fix those rows before searching."
            )


def _check_ids(name: str, ids: object, length: int, device: torch.device, what: str) -> Tensor:
    if not isinstance(ids, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of int64 ids, got {type(ids).__name__}.")
    if ids.dtype != torch.int64:
        raise TypeError(f"`{name}` must be int64, got {ids.dtype}; use `{name}.long()`.")
    if ids.shape != (length,):
        raise ValueError(
            f"`{name}` must have shape ({length},) (one id per {what}), got {tuple(ids.shape)}."
        )
    if ids.device != device:
        raise ValueError(
            f"`{name}` is on {ids.device} but the bank is on {device}; move it with `.to(bank.device)`."
        )
    return ids


def _candidates_per_query(exclude: Tensor, bank_ids: Tensor, presorted: bool = False) -> Tensor:
    """Number of bank rows each query may return: rows whose id differs from its exclude id."""
    sorted_ids = bank_ids if presorted else torch.sort(bank_ids).values
    same = torch.searchsorted(sorted_ids, exclude, right=True) - torch.searchsorted(
        sorted_ids, exclude
    )
    return bank_ids.numel() - same


def _default_chunks(num_queries: int, num_bank: int, dim: int) -> tuple[int, int]:
    """(query rows, bank rows) per step, so that a (bank rows, dim) float32 slice plus the
    (query rows, bank rows) distance block fit the working-memory target: a few queries (one
    training batch) scan the bank in large chunks, many queries in square-ish blocks."""
    elems = _STEP_BYTES // 4
    q_rows = max(1, min(num_queries, 4096))
    b_rows = max(1, min(num_bank, elems // (dim + q_rows)))
    return q_rows, b_rows


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (fp16/bf16 storage is searched in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _row_scales(bank: Tensor, distance: str, chunk_size: int | None = None) -> Tensor:
    """What the search needs of each bank row, computed once: (N,) in the compute dtype.

    Cosine: ``1 / ||b||`` (so a raw row times it is a unit row; a zero row keeps similarity 0,
    never NaN). Squared L2: ``||b||^2``. One pass over the bank, a chunk at a time.
    """
    dtype = _compute_dtype(bank)
    out = torch.empty(bank.shape[0], dtype=dtype, device=bank.device)
    # Small chunks: a half-precision bank is cast chunk by chunk, and nothing else is copied.
    step = chunk_size or max(1, _SCALE_CHUNK_BYTES // (4 * max(bank.shape[1], 1)))
    for b0 in range(0, bank.shape[0], step):
        norms = torch.linalg.vector_norm(bank[b0 : b0 + step].to(dtype), dim=1)
        if distance == "cosine":
            out[b0 : b0 + step] = norms.clamp_min(torch.finfo(dtype).tiny).reciprocal()
        else:
            out[b0 : b0 + step] = norms.square()
    return out


def _exact_search(
    queries: Tensor,
    bank: Tensor,
    scales: Tensor,
    k: int,
    distance: str,
    exclude: Tensor | None,
    bank_ids: Tensor | None,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    """The search loop on checked inputs: finite rows, ``scales = _row_scales(bank, distance)``,
    ``k`` within the candidates. Returns (Q, k) float32 distances and int64 positions."""
    num_q, num_b = queries.shape[0], bank.shape[0]
    dtype = _compute_dtype(queries, bank)
    scales = scales.to(dtype)
    out_d = torch.empty(num_q, k, dtype=torch.float32, device=bank.device)
    out_p = torch.empty(num_q, k, dtype=torch.int64, device=bank.device)
    if num_q == 0:
        return out_d, out_p
    q_step, b_step = (
        (chunk_size, chunk_size) if chunk_size else _default_chunks(num_q, num_b, bank.shape[1])
    )
    tiny = torch.finfo(dtype).tiny
    # Ranked by a score that leaves out what is constant per query: cosine distance is
    # 1 + score with score = -(q/|q|).b/|b|; squared L2 is |q|^2 + score with score = |b|^2 - 2 q.b
    # (one fused matrix product). Distances are formed for the k kept only.
    cosine = distance == "cosine"
    if cosine:
        scales = -scales

    for q0 in range(0, num_q, q_step):
        q = queries[q0 : q0 + q_step].to(dtype)
        if cosine:
            q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min(tiny)
        ex = exclude[q0 : q0 + q_step] if exclude is not None else None
        best_d = best_p = None
        for b0 in range(0, num_b, b_step):
            b = bank[b0 : b0 + b_step].to(dtype)  # a view when the bank is already in dtype
            scale = scales[b0 : b0 + b_step]
            if q.shape[0] <= _FEW_QUERIES:  # (bank rows, queries) products are faster for few
                if cosine:
                    block = torch.mm(b, q.T).mul_(scale[:, None]).T
                else:
                    block = torch.addmm(scale[:, None], b, q.T, alpha=-2.0).T
            elif cosine:
                block = torch.mm(q, b.T).mul_(scale[None, :])
            else:
                block = torch.addmm(scale[None, :], q, b.T, alpha=-2.0)
            if ex is not None:
                assert bank_ids is not None
                block.masked_fill_(bank_ids[b0 : b0 + b_step][None, :] == ex[:, None], float("inf"))
            kk = min(k, block.shape[1])
            cd, cp = torch.topk(block, kk, dim=1, largest=False, sorted=True)
            if best_d is None:
                best_d, best_p = cd, cp + b0
                continue
            # Running merge: earlier chunks first, so a stable sort keeps ties in bank order.
            merged_d = torch.cat([best_d, cd], dim=1)
            merged_p = torch.cat([best_p, cp + b0], dim=1)
            order = torch.sort(merged_d, dim=1, stable=True).indices[:, :k]
            best_d = merged_d.gather(1, order)
            best_p = merged_p.gather(1, order)
        assert best_d is not None and best_p is not None
        if cosine:
            best_d = (1.0 + best_d).clamp(0.0, 2.0)
        else:
            # The expansion loses precision for near-duplicates; recompute the k kept distances
            # from differences (exact copies come out as exactly 0) and re-sort.
            diff = bank[best_p.reshape(-1)].to(dtype).reshape(q.shape[0], k, -1) - q[:, None, :]
            best_d = (diff * diff).sum(dim=2)
            order = torch.sort(best_d, dim=1, stable=True).indices
            best_d, best_p = best_d.gather(1, order), best_p.gather(1, order)
        out_d[q0 : q0 + q_step] = best_d.to(torch.float32)
        out_p[q0 : q0 + q_step] = best_p
    return out_d, out_p


def nearest_neighbors(
    queries: Tensor,
    bank: Tensor,
    k: int = 1,
    distance: Literal["cosine", "sqeuclidean"] = "cosine",
    exclude: Tensor | None = None,
    bank_ids: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest bank rows of every query, by exact chunked search.

    Args:
        queries: (Q, D) float tensor (any floating dtype), on the bank's device.
        bank: (N, D) float tensor; fp16/bf16 storage is fine, the search runs in float32 (float64
            when either input is float64) one chunk at a time.
        k: neighbours per query, ``1 <= k <=`` the number of bank rows a query may return.
        distance: ``"cosine"``: 1 - cosine similarity, in [0, 2]; a zero vector is at distance 1
            from everything. ``"sqeuclidean"``: ``||q - b||^2`` (matrix-product expansion clamped at
            0 for the search; the returned distances are recomputed directly from the differences).
        exclude: optional (Q,) int64 ids: bank row j is never returned for query i when
            ``bank_ids[j] == exclude[i]``. Self-exclusion is by id, not by distance: an exact copy
            of the query stored under another id is a valid neighbour (at distance 0).
        bank_ids: (N,) int64 id of each bank row; defaults to ``arange(N)``. Ids may repeat.
        chunk_size: rows per bank chunk and per query chunk (bounds the working memory); default
            sized for about 256 MiB per step (large bank chunks for few queries).

    Returns:
        ``(distances, positions)``: (Q, k) float32 distances in ascending order per row, and (Q, k)
        int64 row positions in ``bank`` (not ids; map with ``bank_ids[positions]``). Both on the
        bank's device.

    Raises:
        TypeError: non-tensor or non-floating inputs, non-int64 ids.
        ValueError: bad shapes, dimension or device mismatch, NaN/Inf, unknown distance, or ``k``
            larger than the number of candidates left after exclusion.
    """
    queries = _check_matrix("queries", queries)
    bank = _check_matrix("bank", bank)
    if distance not in _DISTANCES:
        raise ValueError(f"distance={distance!r} is not supported; use one of {_DISTANCES}.")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries have dim {queries.shape[1]} but the bank has dim {bank.shape[1]}; "
            "both must be latents of the same shape, flattened."
        )
    if queries.device != bank.device:
        raise ValueError(
            f"queries are on {queries.device} but the bank is on {bank.device}; "
            "move them with `queries.to(bank.device)`."
        )
    num_q, num_b = queries.shape[0], bank.shape[0]
    if num_b == 0:
        raise ValueError("the bank is empty; add latents to it before searching.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
    if bank_ids is None:
        if exclude is not None:
            bank_ids = torch.arange(num_b, device=bank.device)
    else:
        bank_ids = _check_ids("bank_ids", bank_ids, num_b, bank.device, "bank row")
    if exclude is not None:
        exclude = _check_ids("exclude", exclude, num_q, bank.device, "query")
        assert bank_ids is not None
        available = int(_candidates_per_query(exclude, bank_ids).min()) if num_q else num_b
    else:
        available = num_b
    if k > available:
        raise ValueError(
            f"k={k} but only {available} bank rows are available to some query"
            f"{' after excluding its own id' if exclude is not None else ''}; "
            f"use k <= {available} or a larger bank."
        )
    _check_finite("queries", queries)
    _check_finite("bank", bank)
    scales = _row_scales(bank, distance, chunk_size)
    return _exact_search(queries, bank, scales, k, distance, exclude, bank_ids, chunk_size)


def pick_neighbor(
    distances: Tensor,
    candidates: Tensor,
    pick: Literal["uniform", "softmax"] = "uniform",
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Choose one of the ``k`` candidate neighbours of each query.

    Args:
        distances: (Q, k) finite distances of the candidates (as returned by the search).
        candidates: (Q, k) tensor of candidates (positions or ids, any dtype); same shape.
        pick: ``"uniform"``: each of the k with probability 1/k. ``"softmax"``: candidate j with
            probability ``softmax(-distances)[j]``. The rule depends on the scale of what is
            passed: the paper's official code passes the mean squared difference per latent
            element between the query and each candidate on the raw latents (whatever distance
            found them), ``((z[:, None] - cand) ** 2).mean(-1)``, which is what
            ``InterpolatedFID(pick="softmax_mse")`` does; cosine distances (in [0, 2]) give
            nearly uniform picks.
        generator: the random source, for reproducible picks: one generator for all rows (the
            draw is made on its device, CPU when None, and moved to the candidates' device), or
            a sequence of Q CPU generators, one per row, so that a row's pick depends only on its
            own generator (not on the other rows of the call).

    Returns:
        (Q,) tensor: the chosen candidate of each row, dtype and device of ``candidates``. With
        ``k == 1`` this is column 0 and no random numbers are drawn.
    """
    if not isinstance(distances, Tensor) or not isinstance(candidates, Tensor):
        raise TypeError("`distances` and `candidates` must be torch.Tensors.")
    if distances.ndim != 2 or distances.shape != candidates.shape:
        raise ValueError(
            "`distances` and `candidates` must both have shape (Q, k), got "
            f"{tuple(distances.shape)} and {tuple(candidates.shape)}."
        )
    if distances.shape[1] < 1:
        raise ValueError("k must be at least 1: there are no candidates to pick from.")
    if pick not in _PICKS:
        raise ValueError(f"pick={pick!r} is not supported; use one of {_PICKS}.")
    if not distances.is_floating_point():
        raise TypeError(f"`distances` must be floating point, got {distances.dtype}.")
    if not bool(torch.isfinite(distances).all()):
        raise ValueError("`distances` contains NaN or Inf; pick from finite distances only.")
    num_q, k = distances.shape
    if k == 1:
        return candidates[:, 0].clone()
    if generator is not None and not isinstance(generator, torch.Generator):
        if len(generator) != num_q:
            raise ValueError(f"got {len(generator)} generators for {num_q} rows; pass one per row.")
        # One uniform draw per row from its own generator, then the inverse CDF (vectorised).
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generator])
        if pick == "uniform":
            col = (u * k).long().clamp_max(k - 1)
        else:
            probs = torch.softmax(-distances.detach().to("cpu", torch.float64), dim=1)
            col = (probs.cumsum(dim=1) <= u[:, None]).sum(dim=1).clamp_max(k - 1)
        col = col.to(candidates.device)
        return candidates.gather(1, col[:, None]).squeeze(1)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    if pick == "uniform":
        col = torch.randint(0, k, (num_q,), generator=generator, device=draw_device)
    else:
        probs = torch.softmax(-distances.detach().to(draw_device, torch.float64), dim=1)
        col = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    col = col.to(candidates.device)
    return candidates.gather(1, col[:, None]).squeeze(1)
