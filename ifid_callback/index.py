"""Nearest-neighbour index over a bank of flattened latents: exact (torch) or approximate (faiss)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ifid_callback.functional.neighbors import (
    _candidates_per_query,
    _check_finite,
    _check_matrix,
    _exact_search,
    _row_scales,
)

__all__ = ["NeighborIndex"]

NAMED_INDEXES = ("auto", "exact", "flat", "ivf", "ivf-sq8", "ivf-pq", "hnsw")
_DISTANCES = ("cosine", "sqeuclidean")

# "auto" policy, from bench/bench_search.py on clustered latents (2 CPU cores, 1000 queries):
# exact chunked matmul costs Q*N*D and needs no build, while an IVF index costs N*nlist*D to
# add (plus k-means training) before it searches ~nprobe/nlist of the bank. At 1e4-1e5 rows the
# build alone takes longer than the exact search (and faiss Flat is no faster than torch), so
# exact wins. From a few 1e5 rows the exact search of a query set grows past the build, and the
# fp32 bank (4*D bytes per row) becomes the memory problem; IVF-SQ8 then searches >= 10x faster
# at recall@1 >= 0.95 with about 1/4 of the memory. Hence: exact below AUTO_EXACT_MAX_ROWS rows
# when the stored vectors fit `memory_budget_bytes`, IVF-SQ8 above; when SQ8 does not fit, IVF-PQ
# with the most sub-quantizers (at most D/4) whose codes fit the budget.
AUTO_EXACT_MAX_ROWS = 200_000

# IVF training: points per list sampled for k-means, and its iterations. Fewer than faiss'
# defaults (39-256 points, 25 iterations) because training dominates the build on CPU and the
# partition quality barely moves recall at the default nprobe.
_TRAIN_POINTS_PER_LIST = 32
_KMEANS_ITERS = 10
_MIN_TRAIN_POINTS_PER_LIST = 8
_MAX_NLIST = 4096
# Default nprobe as a fraction of nlist, never fewer than _MIN_NPROBE lists. Measured on clustered
# latents, 250k x 1024, IVF2000,SQ8, 1000 queries, idle 2-core CPU: nprobe 31 gives recall@1 0.998
# at 6.8x the exact search's speed, 16 gives 0.989 at 11.5x, 8 gives 0.914 at 16.8x.
_NPROBE_FRACTION = 1 / 128
_MIN_NPROBE = 16
_HNSW_M = 32
_ADD_BATCH = 65536
# Working memory of a compressed build beside the rows and the index, so that a refresh peaks
# near rows + index + a few %, never at a second copy of the rows: the float32 training sample
# holds at most max(N/16 rows, _MIN_TRAIN_POINTS_PER_LIST per list, _TRAIN_BYTES) (8 points
# per list measured recall@1 0.992 against 0.998 at 32, clustered 20k x 256, IVF566,SQ8), and
# each float32 chunk being added at most max(N/32 rows, _ADD_BYTES).
_TRAIN_FRACTION = 16
_TRAIN_BYTES = 4 * 2**20  # small builds (and PQ codebooks) keep enough training points
_ADD_FRACTION = 32
_ADD_BYTES = 2**20


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this index needs faiss: `pip install faiss-cpu` (or `pip install faiss-gpu` for CUDA); "
            "index='exact' or 'auto' work without it."
        ) from err
    return faiss


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_nlist(num_vectors: int) -> int:
    """Number of IVF lists for ``num_vectors`` rows: about 4*sqrt(N), at most N/8 and 4096."""
    nlist = round(4 * math.sqrt(max(num_vectors, 1)))
    return max(1, min(nlist, num_vectors // _MIN_TRAIN_POINTS_PER_LIST, _MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default (see _NPROBE_FRACTION)."""
    return max(1, min(nlist, max(_MIN_NPROBE, math.ceil(nlist * _NPROBE_FRACTION))))


def _transient_rows(n: int, dim: int, fraction: int, floor_bytes: int, low: int, high: int) -> int:
    """Rows of float32 working memory allowed beside ``n`` rows of ``dim``: the larger of
    ``n / fraction`` and ``floor_bytes``, clipped to [low, high]."""
    rows = max(n // fraction, floor_bytes // (4 * dim))
    return max(1, low, min(rows, high))


def _pq_subquantizers(dim: int) -> int:
    # 8-bit codes over sub-vectors of 4 dims (1/16 of fp32); the largest divisor below when
    # D is not a multiple of 4.
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def ivf_memory_bytes(n: int, dim: int, nlist: int, codec: str) -> int:
    """Bytes of an ``IVF{nlist},{codec}`` faiss index over ``n`` rows of ``dim`` (no stored ids).

    ``codec``: ``"SQ8"`` (one byte per dimension, 2*D trained floats) or ``"PQ{m}"`` (m one-byte
    codes, 256 codewords per dimension). Each row also holds an 8-byte label in its list.
    """
    fixed = nlist * dim * 4
    if codec == "SQ8":
        return fixed + 2 * dim * 4 + n * (dim + 8)
    m = int(codec.removeprefix("PQ"))
    return fixed + 256 * dim * 4 + n * (m + 8)


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
            _faiss()
        if distance not in _DISTANCES:
            raise ValueError(f"distance={distance!r} is not supported; use one of {_DISTANCES}.")
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
        self._vectors: Tensor | None = None  # exact: the stored vectors
        # exact: per-row norms (1/||x|| or ||x||^2), computed once at build, and the sorted ids.
        self._scales: Tensor | None = None
        self._sorted_ids: Tensor | None = None
        self._ids: Tensor | None = None  # ids by position (None: ids are positions 0..N-1)
        self._faiss_index: Any = None  # labels are positions 0..N-1
        self._gpu = False
        self._faiss_bytes = 0

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
        if self._kind == "exact":
            assert self._vectors is not None and self._scales is not None
            held = self._vectors.numel() * self._vectors.element_size()
            held += self._scales.numel() * self._scales.element_size()
            if self._sorted_ids is not None:
                held += self._sorted_ids.numel() * 8
        else:
            held = self._faiss_bytes
        if self._ids is not None:
            held += self._ids.numel() * 8
        return int(held)

    @property
    def memory_per_vector(self) -> float:
        """``memory_bytes / len(self)``, in bytes (compare with 4*D for fp32)."""
        return self.memory_bytes / max(self._n, 1)

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
        choice = self.index
        if choice == "auto":
            budget = self.memory_budget_bytes
            fits = budget is None or n * dim * element_size <= budget
            if n < AUTO_EXACT_MAX_ROWS and fits and not compressed:
                return "exact"
            if not _has_faiss():
                if fits:
                    return "exact"
                raise ImportError(
                    f"{n} vectors of dim {dim} ({n * dim * element_size} bytes) exceed "
                    f"memory_budget_bytes={budget} and a compressed index needs "
                    "faiss: `pip install faiss-cpu` (or faiss-gpu)."
                )
            return self._auto_compressed(n, dim, id_bytes)
        if choice == "exact":
            return "exact"
        nlist = choose_nlist(n)
        return {
            "flat": "Flat",
            "ivf": f"IVF{nlist},Flat",
            "ivf-sq8": f"IVF{nlist},SQ8",
            "ivf-pq": f"IVF{nlist},PQ{_pq_subquantizers(dim)}",
            "hnsw": f"HNSW{_HNSW_M}",
        }.get(choice, choice)

    def _auto_compressed(self, n: int, dim: int, id_bytes: int) -> str:
        """IVF-SQ8 when it fits the budget, else IVF-PQ with the most sub-quantizers that fit.

        Sizes are those :attr:`memory_bytes` reports: coarse centroids, codebooks, one code and
        one 8-byte label per row, plus stored ids.
        """
        budget = self.memory_budget_bytes
        nlist = choose_nlist(n)
        sq8 = ivf_memory_bytes(n, dim, nlist, "SQ8") + n * id_bytes
        if budget is None or sq8 <= budget:
            return f"IVF{nlist},SQ8"
        # Sub-quantizers of 8-bit codes dividing D, from D/4 (the quality cap) down to 1.
        for m in range(max(1, dim // 4), 0, -1):
            if dim % m == 0 and ivf_memory_bytes(n, dim, nlist, f"PQ{m}") + n * id_bytes <= budget:
                return f"IVF{nlist},PQ{m}"
        smallest = ivf_memory_bytes(n, dim, nlist, "PQ1") + n * id_bytes
        raise ValueError(
            f"memory_budget_bytes={budget} is too small for {n} vectors of dim {dim}: the smallest "
            f"compressed index (IVF{nlist},PQ1) needs {smallest} bytes (centroids, codebooks and "
            f"{1 + 8 + id_bytes} bytes per row). Raise memory_budget_bytes to at least {smallest}, "
            "index fewer rows, or pass memory_budget_bytes=None."
        )

    # ------------------------------------------------------------------ build
    def _prep(self, x: Tensor, owned: bool = False) -> np.ndarray:
        """float32, C-contiguous numpy rows for faiss (unit rows for cosine), in one copy.

        ``owned``: ``x`` is already a private float32 CPU tensor, normalised in place.
        """
        owned = owned and x.dtype == torch.float32 and x.device.type == "cpu"
        x = x.detach().to("cpu", torch.float32, copy=not owned).contiguous()
        if self.distance == "cosine":
            x /= torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(
                torch.finfo(torch.float32).tiny
            )
        return x.numpy()

    def _new_faiss(
        self, kind: str, dim: int, train: Tensor | None, cuda: bool
    ) -> tuple[Any, bool, bool, tuple[int, int]]:
        """Create and train a faiss index.

        Returns (index, on_gpu, is_ivf, (fixed bytes, bytes per added vector)).
        """
        faiss = _faiss()
        try:
            index = faiss.index_factory(dim, kind, faiss.METRIC_L2)
        except RuntimeError as err:
            raise ValueError(
                f"faiss cannot build index={kind!r} for dim {dim}: {err}. Use one of "
                f"{NAMED_INDEXES} or a valid faiss factory string such as 'IVF1024,SQ8'."
            ) from err
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.niter = _KMEANS_ITERS
            ivf.cp.seed = self.seed
            ivf.cp.min_points_per_centroid = 1  # we sample enough points ourselves
            ivf.cp.max_points_per_centroid = _TRAIN_POINTS_PER_LIST
            ivf.nprobe = self.nprobe or default_nprobe(ivf.nlist)
            pq = getattr(faiss.downcast_index(ivf), "pq", None)
            if pq is not None:
                pq.cp.niter = _KMEANS_ITERS
                pq.cp.seed = self.seed
                pq.cp.min_points_per_centroid = 1  # small banks: fewer points than 39 * 256
            if hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
                # Only for polysemous filtering, which we do not use; it dominates PQ training.
                faiss.downcast_index(ivf).do_polysemous_training = False
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = max(self.nprobe or 64, 16)
        if not index.is_trained:
            if train is None or len(train) == 0:
                raise ValueError(f"index {kind!r} needs training vectors.")
            index.train(self._prep(train, owned=True))
        fixed = self._faiss_fixed_bytes(index)
        on_gpu = False
        if cuda and hnsw is None and faiss.get_num_gpus() > 0:
            # Train on CPU, add and search on the GPU(s); shard across several.
            try:
                options = faiss.GpuMultipleClonerOptions()
                options.shard = True
                index = faiss.index_cpu_to_all_gpus(index, co=options)
                on_gpu = True
            except (RuntimeError, AttributeError) as err:  # e.g. PQ sizes the GPU does not support
                warnings.warn(f"faiss index {kind!r} stays on CPU: {err}", stacklevel=3)
        return index, on_gpu, ivf is not None, fixed

    def _faiss_fixed_bytes(self, index: Any) -> tuple[int, int]:
        """(fixed bytes, bytes per added vector) of a trained, empty CPU faiss index."""
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            fixed = ivf.nlist * ivf.d * 4
            inner = faiss.downcast_index(ivf)
            if getattr(inner, "pq", None) is not None:
                fixed += inner.pq.M * inner.pq.ksub * inner.pq.dsub * 4
            if getattr(inner, "sq", None) is not None:
                fixed += inner.sq.trained.size() * 4
            return fixed, ivf.code_size + 8
        inner = faiss.downcast_index(index)
        if getattr(inner, "hnsw", None) is not None:
            # fp32 storage, 2*M level-0 links, ~M upper-level links amortised, level/offset tables.
            return 0, index.d * 4 + (2 * _HNSW_M + _HNSW_M // 4) * 4 + 4 + 8
        if getattr(inner, "code_size", None):
            return 0, int(inner.code_size)
        return 0, index.d * 4

    def _finish(
        self,
        kind: str,
        dim: int,
        n: int,
        index: Any,
        gpu: bool,
        ids: Tensor | None,
        vectors: Tensor | None,
        fixed: tuple[int, int],
    ) -> None:
        self._reset()
        self._kind, self._dim, self._n = kind, dim, n
        self._faiss_index, self._gpu, self._vectors = index, gpu, vectors
        self._ids = ids
        self._faiss_bytes = fixed[0] + fixed[1] * n

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
            self._finish(kind, dim, n, None, False, ids, stored, (0, 0))
            self._scales = scales
            self._sorted_ids = torch.sort(ids).values if ids is not None else None
            return self
        train = self._train_sample(vectors)
        index, gpu, is_ivf, fixed = self._new_faiss(kind, dim, train, target.type == "cuda")
        del train
        step = _transient_rows(n, dim, _ADD_FRACTION, _ADD_BYTES, 256, _ADD_BATCH)
        for start in range(0, n, step):
            self._add(index, vectors[start : start + step], start, is_ivf)
        self._finish(kind, dim, n, index, gpu, ids, None, fixed)
        return self

    def _train_sample(self, vectors: Tensor) -> Tensor:
        """A seeded subsample to train on: a private float32 CPU tensor (one copy)."""
        n, dim = vectors.shape
        nlist = choose_nlist(n)
        limit = _transient_rows(
            n, dim, _TRAIN_FRACTION, _TRAIN_BYTES, nlist * _MIN_TRAIN_POINTS_PER_LIST, n
        )
        want = min(n, nlist * _TRAIN_POINTS_PER_LIST, max(_ADD_BATCH, 256 * 256), limit)
        g = torch.Generator().manual_seed(self.seed)
        rows = torch.randperm(n, generator=g)[:want].sort().values
        sample = vectors[rows.to(vectors.device)]  # a copy, in the storage dtype
        return sample.to("cpu", torch.float32)

    def kind_for(self, vectors: Tensor) -> str:
        """The index :meth:`build` would make for ``vectors``: ``"exact"`` or a faiss string."""
        target = self.device if self.device is not None else vectors.device
        return self._resolve(
            vectors.shape[0], vectors.shape[1], vectors.element_size(), target.type == "cuda"
        )

    def _add(self, index: Any, chunk: Tensor, start: int, is_ivf: bool) -> None:
        """Add rows ``start, start + 1, ...``: faiss labels them with their positions."""
        x = self._prep(chunk)
        if is_ivf:  # IVF keeps labels per list: give the positions explicitly
            index.add_with_ids(x, np.arange(start, start + len(chunk), dtype=np.int64))
        else:
            index.add(x)  # labels are the insertion positions

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

        def split(
            item: Tensor | tuple[Tensor, Tensor], dim: int | None
        ) -> tuple[Tensor, Tensor | None]:
            if isinstance(item, tuple):
                x, i = item
                x = _check_vectors("batch", x, dim)
                return x, _check_ids(i, len(x)).to("cpu")
            return _check_vectors("batch", item, dim), None

        x0, i0 = split(first, None)
        dim = x0.shape[1]
        cuda = (self.device or x0.device).type == "cuda"
        id_bytes = 8 if i0 is not None else 0
        if self.index == "exact" or (
            self.index == "auto"
            and total is not None
            and self._resolve(total, dim, x0.element_size(), cuda, False, id_bytes) == "exact"
        ):
            xs, ids_list = [x0], [i0]
            for item in it:
                x, i = split(item, dim)
                xs.append(x)
                ids_list.append(i)
            return self.build(torch.cat([x.to(x0.device) for x in xs]), self._stream_ids(ids_list))

        def plan(rows: int) -> tuple[str, int]:
            # "auto" here always compresses; the budget is checked for the planned rows.
            kind = self._resolve(rows, dim, x0.element_size(), cuda, True, id_bytes)
            if self.index in NAMED_INDEXES:  # our nlist follows the planned size
                kind = re.sub(r"IVF\d+", f"IVF{choose_nlist(rows)}", kind)
            need = train_size or min(
                rows, max(choose_nlist(rows) * _TRAIN_POINTS_PER_LIST, 256 * 256)
            )
            return kind, need

        planned = total if total is not None else 10 * (train_size or _ADD_BATCH)
        kind, need = plan(planned)
        # Buffer the first chunk(s) for training, then add everything in arrival order.
        pending: list[tuple[Tensor, Tensor | None]] = [(x0, i0)]
        buffered = len(x0)
        exhausted = False
        while buffered < need:
            item = next(it, None)
            if item is None:
                exhausted = True
                break
            pending.append(split(item, dim))
            buffered += len(pending[-1][0])
        if exhausted and buffered < planned:  # the whole set fitted in the buffer
            kind, need = plan(buffered)
        train = torch.cat([p[0].detach().to("cpu", torch.float32) for p in pending])[:need]
        index, gpu, is_ivf, fixed = self._new_faiss(kind, dim, train, cuda)
        del train
        given = any(p[1] is not None for p in pending)
        stored_ids: list[Tensor] = []
        n = 0

        def add(x: Tensor, i: Tensor | None) -> None:
            nonlocal n
            if (i is not None) != given:
                raise ValueError("give ids with every batch or with none of them.")
            self._add(index, x, n, is_ivf)
            if i is not None:
                stored_ids.append(i)
            n += len(x)

        for x, i in pending:
            add(x, i)
        pending.clear()
        for item in it:
            add(*split(item, dim))
        ids = torch.cat(stored_ids) if (stored_ids and given) else None
        self._finish(kind, dim, n, index, gpu, ids, None, fixed)
        return self

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
        if self._kind == "exact":
            d, pos = self._exact_search(queries, k, exclude)
            return d.to(out_device), pos.to(out_device)
        d, pos = self._faiss_search(queries, k, exclude.cpu() if exclude is not None else None)
        return d.to(out_device), pos.to(out_device)

    def _exact_search(
        self, queries: Tensor, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        # The rows were checked and their norms computed at build: only the queries are new.
        assert self._vectors is not None and self._scales is not None
        dev = self._vectors.device
        ids = self._ids
        ex = exclude.to(dev) if exclude is not None else None
        if ex is not None:
            if ids is None:
                ids = torch.arange(self._n, device=dev)
            sorted_ids = self._sorted_ids if self._sorted_ids is not None else ids
            left = int(_candidates_per_query(ex, sorted_ids, presorted=True).min())
            if len(ex) and k > left:
                raise ValueError(
                    f"k={k} but only {left} indexed rows are available to some query after "
                    f"excluding its own id; use k <= {left} or a larger bank."
                )
        return _exact_search(
            queries.to(dev), self._vectors, self._scales, k, self.distance, ex, ids, None
        )

    def ids_of(self, positions: Tensor) -> Tensor:
        """Ids of the rows at ``positions`` (any shape of int64 positions; same shape, device)."""
        self._require_built()
        if self._ids is None:
            return positions.clone()
        return self._ids[positions.to(self._ids.device)].to(positions.device)

    def _faiss_query(
        self, x: np.ndarray, kk: int, exhaustive: bool = False
    ) -> tuple[Tensor, Tensor]:
        faiss = _faiss()
        ivf = None if self._gpu else faiss.try_extract_index_ivf(self._faiss_index)
        saved = None
        if exhaustive:
            if ivf is not None:
                saved, ivf.nprobe = ivf.nprobe, ivf.nlist
            elif self._gpu and hasattr(self._faiss_index, "nprobe"):
                saved, self._faiss_index.nprobe = self._faiss_index.nprobe, 2048  # GPU max
        try:
            d, lab = self._faiss_index.search(x, kk)
        finally:
            if saved is not None:
                if ivf is not None:
                    ivf.nprobe = saved
                else:
                    self._faiss_index.nprobe = saved
        d_t = torch.from_numpy(d).clamp_min(0.0)
        if self.distance == "cosine":
            d_t = (d_t / 2.0).clamp_max(2.0)  # ||a-b||^2 = 2 - 2 cos for unit vectors
        return d_t, torch.from_numpy(lab)  # positions; -1 where fewer rows were found

    def _faiss_search(
        self, queries: Tensor, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        x = self._prep(queries)
        q = len(x)
        out_d = torch.empty(q, k, dtype=torch.float32)
        out_i = torch.empty(q, k, dtype=torch.int64)
        todo = torch.arange(q)
        kk = k + (1 if exclude is not None else 0)
        exhaustive = False
        while len(todo):
            kk = min(kk, self._n)
            d, lab = self._faiss_query(x[todo.numpy()], kk, exhaustive)
            valid = lab >= 0  # -1: fewer than kk rows found in the probed lists
            if exclude is not None:
                found_ids = self.ids_of(lab.clamp_min(0).cpu()) if self._ids is not None else lab
                valid &= found_ids != exclude[todo][:, None]
            enough = valid.sum(1) >= k
            # Valid entries first, in their (ascending) order.
            order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :k]
            done = todo[enough]
            out_d[done] = d.gather(1, order)[enough]
            out_i[done] = lab.gather(1, order)[enough]
            todo = todo[~enough]
            if not len(todo):
                break
            if kk >= self._n:
                if exhaustive:
                    raise ValueError(
                        f"k={k} but some query has fewer than {k} indexed rows with an id "
                        "other than its exclude id; use a smaller k or a larger bank."
                    )
                exhaustive = True  # last resort: scan every list
            kk *= 2  # many rows share the excluded id (or lists were short): ask for more
        return out_d, out_i
