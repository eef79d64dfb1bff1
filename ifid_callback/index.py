"""Nearest-neighbour index over a bank of flattened latents: exact (torch) or approximate (faiss).

:class:`NeighborIndex` is the one object users and the metric hold. It checks inputs and keeps
the row ids; the sizing rules live in :mod:`ifid_callback.index_policy`, the faiss indexes in
:mod:`ifid_callback.index_faiss`, the streamed build in :mod:`ifid_callback.index_stream` and the
exact search in :mod:`ifid_callback.index_exact`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

import torch
from torch import Tensor

from ifid_callback.functional.neighbors import _check_finite, _check_matrix, _row_scales
from ifid_callback.index_exact import ExactRows
from ifid_callback.index_faiss import FaissRows, FaissSettings, build_faiss, faiss_module, has_faiss
from ifid_callback.index_policy import (
    ADD_BATCH,
    AUTO_EXACT_MAX_ROWS,
    DISTANCES,
    NAMED_INDEXES,
    choose_nlist,
    ivf_memory_bytes,
    renumber_lists,
    resolve_kind,
    stream_training_rows,
)
from ifid_callback.index_stream import build_stream

# The sizing rules are importable from here too, where users and the benches find them.
__all__ = [
    "AUTO_EXACT_MAX_ROWS",
    "NAMED_INDEXES",
    "NeighborIndex",
    "choose_nlist",
    "ivf_memory_bytes",
]


def _check_vectors(name: str, x: object, dim: int | None = None) -> Tensor:
    x = _check_matrix(name, x)
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"`{name}` has dim {x.shape[1]} but the index holds vectors of dim {dim}; "
            "search with latents of the same shape as the bank."
        )
    _check_finite(name, x)
    return x


def _check_ids(ids: object, n: int) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dtype != torch.int64 or ids.shape != (n,):
        raise ValueError(
            f"`ids` must be an int64 tensor of shape ({n},), got "
            f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}."
        )
    return ids


def _check_batch(
    item: Tensor | tuple[Tensor, Tensor], dim: int | None
) -> tuple[Tensor, Tensor | None]:
    """One streamed batch: checked (B, D) rows and their (B,) CPU ids, or None without ids."""
    if isinstance(item, tuple):
        x, i = item
        x = _check_vectors("batch", x, dim)
        return x, _check_ids(i, len(x)).to("cpu")
    return _check_vectors("batch", item, dim), None


class NeighborIndex:
    """Nearest-neighbour index over (N, D) vectors with int64 ids.

    Rows are addressed by position: :meth:`search_rows` returns positions 0..N-1 into the
    vectors the index was built from (in build or arrival order), and :meth:`ids_of` maps them to
    their ids. Ids are labels (they may repeat); a position names exactly one row.

    Args:
        index: ``"auto"`` (exact for small banks, IVF-SQ8 for large ones; see AUTO_EXACT_MAX_ROWS),
            ``"exact"`` (torch chunked matmul on the vectors' device), ``"flat"`` (faiss exact),
            ``"ivf"`` (IVF, uncompressed), ``"ivf-sq8"`` (IVF, 8-bit scalar quantizer, 1/4 of fp32),
            ``"ivf-pq"`` (IVF, product quantizer, 1/16 of fp32), ``"hnsw"`` (HNSW32 graph, CPU), or
            any faiss factory string such as ``"IVF1024,SQ8"``. All but auto/exact need faiss.
        distance: ``"cosine"`` (1 - cosine similarity; faiss indexes hold L2-normalised vectors)
            or ``"sqeuclidean"`` (squared L2).
        device: device of the exact search (default: the vectors' device). With CUDA vectors and
            a GPU build of faiss, faiss indexes (except HNSW) are moved to the GPU(s).
        nprobe: IVF lists scanned per query (HNSW: efSearch); default from the number of lists.
        memory_budget_bytes: "auto" picks a compressed index when the stored vectors exceed it:
            IVF-SQ8, or IVF-PQ with the most sub-quantizers (<= D/4) that fit; refused when even
            one sub-quantizer does not fit.
        seed: seeds the training subsample and k-means.

    Approximate indexes return approximate distances (from the compressed codes) and may miss
    the true neighbour (recall < 1).
    """

    def __init__(
        self,
        index: str = "auto",
        distance: str = "cosine",
        device: torch.device | str | None = None,
        nprobe: int | None = None,
        memory_budget_bytes: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(index, str) or not index.strip():
            raise ValueError(
                f"index must be a non-empty string; accepted: {NAMED_INDEXES} or a faiss factory string."
            )
        # Lower-case words are our names; anything else is taken as a faiss factory string
        # (those always contain upper-case tokens such as IVF, Flat, HNSW, PQ, SQ8).
        if index not in NAMED_INDEXES and index == index.lower():
            raise ValueError(
                f"index={index!r} is not known; use one of {NAMED_INDEXES} "
                "or a faiss factory string such as 'IVF1024,SQ8'."
            )
        if index not in ("auto", "exact"):
            faiss_module()
        if distance not in DISTANCES:
            raise ValueError(f"distance={distance!r} is not supported; use one of {DISTANCES}.")
        if nprobe is not None and (
            isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1
        ):
            raise ValueError(f"nprobe must be a positive int or None, got {nprobe!r}.")
        if memory_budget_bytes is not None and (
            not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0
        ):
            raise ValueError(
                f"memory_budget_bytes must be a positive int or None, got {memory_budget_bytes!r}."
            )
        self.index = index
        self.distance = distance
        self.device = torch.device(device) if device is not None else None
        self.nprobe = nprobe
        self.memory_budget_bytes = memory_budget_bytes
        self.seed = int(seed)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._kind: str | None = None
        self._dim: int | None = None
        self._n = 0
        self._ids: Tensor | None = None  # ids by position (None: ids are positions 0..N-1)
        self._exact: ExactRows | None = None
        self._faiss: FaissRows | None = None  # labels are positions 0..N-1

    def _finish(
        self,
        kind: str,
        dim: int,
        n: int,
        ids: Tensor | None,
        rows: ExactRows | FaissRows,
    ) -> None:
        self._reset()
        self._kind, self._dim, self._n, self._ids = kind, dim, n, ids
        if isinstance(rows, ExactRows):
            self._exact = rows
        else:
            self._faiss = rows

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        """Dimension D of the indexed vectors (ValueError before build)."""
        self._require_built()
        assert self._dim is not None
        return self._dim

    @property
    def kind(self) -> str:
        """The resolved index: ``"exact"`` or the faiss factory string, e.g. ``"IVF256,SQ8"``."""
        self._require_built()
        assert self._kind is not None
        return self._kind

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the index: vectors or codes, stored ids, centroids and graph links."""
        self._require_built()
        held = (
            self._exact.memory_bytes if self._exact is not None else self._faiss_rows.memory_bytes
        )
        if self._ids is not None:
            held += self._ids.numel() * 8
        return int(held)

    @property
    def memory_per_vector(self) -> float:
        """``memory_bytes / len(self)``, in bytes (compare with 4*D for fp32)."""
        return self.memory_bytes / max(self._n, 1)

    @property
    def _gpu(self) -> bool:
        """Whether the faiss index lives on GPU(s)."""
        return self._faiss is not None and self._faiss.on_gpu

    @property
    def _faiss_rows(self) -> FaissRows:
        assert self._faiss is not None
        return self._faiss

    def _require_built(self) -> None:
        if self._kind is None:
            raise ValueError(
                "the index is empty; call build(vectors) or build_streaming(batches) first."
            )

    # ------------------------------------------------------------------ policy
    def _resolve(
        self,
        n: int,
        dim: int,
        element_size: int,
        cuda: bool,
        compressed: bool = False,
        id_bytes: int = 0,
    ) -> str:
        """The index kind for ``n`` rows of ``dim``: ``"exact"`` or a faiss factory string.

        ``compressed``: "auto" skips the exact index (a streamed build). ``id_bytes``: bytes per
        row of stored ids (8 when ids are given), counted against ``memory_budget_bytes``.
        """
        # Only "auto" asks whether faiss is there (exact users need not import it).
        faiss_available = self.index == "auto" and has_faiss()
        budget = self.memory_budget_bytes
        return resolve_kind(
            self.index, n, dim, element_size, budget, faiss_available, compressed, id_bytes
        )

    def _settings(self) -> FaissSettings:
        return FaissSettings(self.distance, self.seed, self.nprobe)

    def kind_for(self, vectors: Tensor) -> str:
        """The index :meth:`build` would make for ``vectors``: ``"exact"`` or a faiss string."""
        target = self.device if self.device is not None else vectors.device
        return self._resolve(
            vectors.shape[0], vectors.shape[1], vectors.element_size(), target.type == "cuda"
        )

    # ------------------------------------------------------------------ build
    def build(self, vectors: Tensor, ids: Tensor | None = None) -> NeighborIndex:
        """Index ``vectors`` (N, D), any float dtype; ``ids`` (N,) int64, default ``arange(N)``.

        Replaces any previous content. Rows are checked for NaN/Inf here, once: searches check only
        their queries. The exact index keeps ``vectors`` itself (no copy when it is already on the
        index's device; do not modify it while the index is in use) plus one norm per row; IVF
        indexes are trained on a seeded subsample. On error the index is left as it was.
        Returns self.
        """
        vectors = _check_vectors("vectors", vectors)
        n, dim = vectors.shape
        if n == 0:
            raise ValueError("cannot build an index over an empty bank; add vectors first.")
        if ids is not None:
            ids = _check_ids(ids, n).to("cpu")
        target = self.device if self.device is not None else vectors.device
        id_bytes = 8 if ids is not None else 0
        kind = self._resolve(n, dim, vectors.element_size(), target.type == "cuda", False, id_bytes)
        if kind == "exact":
            stored = vectors.detach().to(target)
            scales = _row_scales(stored, self.distance)
            if ids is not None:
                ids = ids.to(target)
            sorted_ids = torch.sort(ids).values if ids is not None else None
            self._finish(kind, dim, n, ids, ExactRows(stored, scales, ids, sorted_ids))
            return self
        rows = build_faiss(vectors, kind, target.type == "cuda", self._settings())
        self._finish(kind, dim, n, ids, rows)
        return self

    def build_streaming(
        self,
        batches: Iterable[Tensor | tuple[Tensor, Tensor]],
        total: int | None = None,
        train_size: int | None = None,
    ) -> NeighborIndex:
        """Build from chunks without holding the whole reference set in memory.

        Args:
            batches: iterable of (B, D) tensors, or of (vectors, ids) pairs with int64 ids (B,).
                Without ids, rows are numbered 0, 1, 2, ... in arrival order.
            total: expected number of rows (sets the number of IVF lists; default assumes 10x the
                training sample). ``"auto"`` with ``total < AUTO_EXACT_MAX_ROWS`` keeps the rows
                for exact search.
            train_size: rows buffered to train the compressed index (default: enough for the
                chosen number of lists); everything after is added chunk by chunk.

        With ``"auto"``, an unknown ``total`` selects IVF-SQ8. Returns self; on error the index is
        left as it was.
        """
        it = iter(batches)
        first = next(it, None)
        if first is None:
            raise ValueError("`batches` is empty; cannot build an index over an empty bank.")
        x0, i0 = _check_batch(first, None)
        dim = x0.shape[1]
        rest: Iterator[tuple[Tensor, Tensor | None]] = (_check_batch(item, dim) for item in it)
        cuda = (self.device or x0.device).type == "cuda"
        id_bytes = 8 if i0 is not None else 0
        if self.index == "exact" or (
            self.index == "auto"
            and total is not None
            and self._resolve(total, dim, x0.element_size(), cuda, False, id_bytes) == "exact"
        ):
            chunks = [(x0, i0), *rest]
            vectors = torch.cat([x.to(x0.device) for x, _ in chunks])
            return self.build(vectors, self._stream_ids([i for _, i in chunks]))
        planned = total if total is not None else 10 * (train_size or ADD_BATCH)
        plan = partial(self._stream_plan, dim, x0.element_size(), cuda, id_bytes, train_size)
        kind, rows, ids = build_stream((x0, i0), rest, plan, planned, cuda, self._settings())
        self._finish(kind, dim, rows.n, ids, rows)
        return self

    def _stream_plan(
        self,
        dim: int,
        element_size: int,
        cuda: bool,
        id_bytes: int,
        train_size: int | None,
        rows: int,
    ) -> tuple[str, int]:
        """(faiss factory string, rows to train on) of a streamed build of ``rows`` rows."""
        # "auto" here always compresses; the budget is checked for the planned rows.
        kind = self._resolve(rows, dim, element_size, cuda, True, id_bytes)
        if self.index in NAMED_INDEXES:  # our nlist follows the planned size
            kind = renumber_lists(kind, rows)
        return kind, stream_training_rows(rows, train_size)

    @staticmethod
    def _stream_ids(ids_list: list[Tensor | None]) -> Tensor | None:
        if all(i is None for i in ids_list):
            return None
        if any(i is None for i in ids_list):
            raise ValueError("give ids with every batch or with none of them.")
        return torch.cat([i for i in ids_list if i is not None])

    # ------------------------------------------------------------------ search
    def search(
        self, queries: Tensor, k: int = 1, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest indexed vectors of each query, as ids.

        Same as :meth:`search_rows` followed by :meth:`ids_of`; ids may repeat, so use
        :meth:`search_rows` to know which row was found.

        Returns:
            ``(distances, ids)``: (Q, k) float32 distances ascending and (Q, k) int64 ids, on the
            queries' device.
        """
        d, pos = self.search_rows(queries, k, exclude)
        return d, self.ids_of(pos)

    def search_rows(
        self, queries: Tensor, k: int = 1, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest indexed rows of each query, as positions.

        Args:
            queries: (Q, D) float tensor.
            k: neighbours per query; at most the number of indexed rows left after exclusion.
            exclude: optional (Q,) int64 ids: a row whose id equals ``exclude[i]`` is never
                returned for query i (self-exclusion by id; exact copies under other ids remain).

        Returns:
            ``(distances, positions)``: (Q, k) float32 distances ascending (cosine distance or
            squared L2, approximate for compressed indexes) and (Q, k) int64 positions of the rows
            found in the vectors the index was built from, on the queries' device.
        """
        self._require_built()
        queries = _check_vectors("queries", queries, self._dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}.")
        if k > self._n:
            raise ValueError(
                f"k={k} but the index holds only {self._n} vectors; use k <= {self._n}."
            )
        if exclude is not None:
            if (
                not isinstance(exclude, Tensor)
                or exclude.dtype != torch.int64
                or exclude.shape != (len(queries),)
            ):
                raise ValueError(
                    f"`exclude` must be an int64 tensor of shape ({len(queries)},), one id per query."
                )
        out_device = queries.device
        if self._exact is not None:
            d, pos = self._exact.search(queries, k, self.distance, exclude)
        else:
            ex = exclude.cpu() if exclude is not None else None
            d, pos = self._faiss_rows.search(queries, k, ex, self._ids)
        return d.to(out_device), pos.to(out_device)

    def ids_of(self, positions: Tensor) -> Tensor:
        """Ids of the rows at ``positions`` (any shape of int64 positions; same shape, device)."""
        self._require_built()
        if self._ids is None:
            return positions.clone()
        return self._ids[positions.to(self._ids.device)].to(positions.device)
