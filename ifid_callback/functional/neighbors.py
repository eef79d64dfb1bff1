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
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0, 0])
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


def _candidates_per_query(exclude: Tensor, bank_ids: Tensor) -> Tensor:
    """Number of bank rows each query may return: rows whose id differs from its exclude id."""
    sorted_ids = torch.sort(bank_ids).values
    same = torch.searchsorted(sorted_ids, exclude, right=True) - torch.searchsorted(
        sorted_ids, exclude
    )
    return bank_ids.numel() - same


def _default_chunk(num_queries: int, num_bank: int, dim: int) -> int:
    # Rows per chunk so that a (chunk, dim) float32 slice plus a (chunk, chunk) block fit the target.
    elems = _STEP_BYTES // 4
    rows = 1024
    while rows < 16384 and (2 * rows) * (dim + 2 * rows) <= elems:
        rows *= 2
    while rows > 1 and rows * (dim + rows) > elems:
        rows //= 2
    return max(1, min(rows, max(num_queries, num_bank)))


def _prepare(x: Tensor, distance: str, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Cast a chunk to the compute dtype; unit rows for cosine, squared norms for sqeuclidean."""
    x = x.to(dtype)
    if distance == "cosine":
        norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        # Zero rows stay zero, so their similarity to anything is 0 (distance 1), never NaN.
        return x / norms.clamp_min(torch.finfo(dtype).tiny), None
    return x, (x * x).sum(dim=1)


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
            sized for about 256 MiB per step.

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

    dtype = torch.float64 if torch.float64 in (queries.dtype, bank.dtype) else torch.float32
    out_d = torch.empty(num_q, k, dtype=torch.float32, device=bank.device)
    out_p = torch.empty(num_q, k, dtype=torch.int64, device=bank.device)
    if num_q == 0:
        return out_d, out_p
    step = chunk_size or _default_chunk(num_q, num_b, bank.shape[1])

    for q0 in range(0, num_q, step):
        q, q_sq = _prepare(queries[q0 : q0 + step], distance, dtype)
        ex = exclude[q0 : q0 + step] if exclude is not None else None
        best_d = torch.full((q.shape[0], 0), float("inf"), dtype=dtype, device=bank.device)
        best_p = torch.empty((q.shape[0], 0), dtype=torch.int64, device=bank.device)
        for b0 in range(0, num_b, step):
            b, b_sq = _prepare(bank[b0 : b0 + step], distance, dtype)
            if distance == "cosine":
                block = 1.0 - q @ b.T
            else:
                assert q_sq is not None and b_sq is not None
                block = (q_sq[:, None] + b_sq[None, :] - 2.0 * (q @ b.T)).clamp_min_(0.0)
            if ex is not None:
                assert bank_ids is not None
                block.masked_fill_(bank_ids[b0 : b0 + step][None, :] == ex[:, None], float("inf"))
            kk = min(k, block.shape[1])
            cd, cp = torch.topk(block, kk, dim=1, largest=False, sorted=True)
            # Running merge: earlier chunks first, so a stable sort keeps ties in bank order.
            merged_d = torch.cat([best_d, cd], dim=1)
            merged_p = torch.cat([best_p, cp + b0], dim=1)
            order = torch.sort(merged_d, dim=1, stable=True).indices[:, :k]
            best_d = merged_d.gather(1, order)
            best_p = merged_p.gather(1, order)
        if distance == "sqeuclidean":
            # The expansion loses precision for near-duplicates; recompute the k kept distances
            # from differences (exact copies come out as exactly 0) and re-sort.
            diff = bank[best_p.reshape(-1)].to(dtype).reshape(q.shape[0], k, -1) - q[:, None, :]
            best_d = (diff * diff).sum(dim=2)
            order = torch.sort(best_d, dim=1, stable=True).indices
            best_d, best_p = best_d.gather(1, order), best_p.gather(1, order)
        else:
            best_d = best_d.clamp(0.0, 2.0)
        out_d[q0 : q0 + step] = best_d.to(torch.float32)
        out_p[q0 : q0 + step] = best_p
    return out_d, out_p


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
