"""Which nearest-neighbour index to build for a bank, and how much memory it holds.

Pure sizing rules, no faiss: the "auto" choice between the exact search and a compressed faiss
index, the number of IVF lists and lists probed, the working memory of a build, and the bytes an
``IVF{nlist},{codec}`` index holds.
"""

from __future__ import annotations

import math
import re

NAMED_INDEXES = ("auto", "exact", "flat", "ivf", "ivf-sq8", "ivf-pq", "hnsw")
DISTANCES = ("cosine", "sqeuclidean")

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
TRAIN_POINTS_PER_LIST = 32
KMEANS_ITERS = 10
MIN_TRAIN_POINTS_PER_LIST = 8
_MAX_NLIST = 4096
# Default nprobe as a fraction of nlist, never fewer than _MIN_NPROBE lists. Measured on clustered
# latents, 250k x 1024, IVF2000,SQ8, 1000 queries, idle 2-core CPU: nprobe 31 gives recall@1 0.998
# at 6.8x the exact search's speed, 16 gives 0.989 at 11.5x, 8 gives 0.914 at 16.8x.
_NPROBE_FRACTION = 1 / 128
_MIN_NPROBE = 16
HNSW_M = 32
ADD_BATCH = 65536
# Working memory of a compressed build beside the rows and the index, so that a refresh peaks
# near rows + index + a few %, never at a second copy of the rows: the float32 training sample
# holds at most max(N/16 rows, MIN_TRAIN_POINTS_PER_LIST per list, TRAIN_BYTES) (8 points
# per list measured recall@1 0.992 against 0.998 at 32, clustered 20k x 256, IVF566,SQ8), and
# each float32 chunk being added at most max(N/32 rows, ADD_BYTES).
TRAIN_FRACTION = 16
TRAIN_BYTES = 4 * 2**20  # small builds (and PQ codebooks) keep enough training points
ADD_FRACTION = 32
ADD_BYTES = 2**20


def choose_nlist(num_vectors: int) -> int:
    """Number of IVF lists for ``num_vectors`` rows: about 4*sqrt(N), at most N/8 and 4096."""
    nlist = round(4 * math.sqrt(max(num_vectors, 1)))
    return max(1, min(nlist, num_vectors // MIN_TRAIN_POINTS_PER_LIST, _MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default (see _NPROBE_FRACTION)."""
    return max(1, min(nlist, max(_MIN_NPROBE, math.ceil(nlist * _NPROBE_FRACTION))))


def transient_rows(n: int, dim: int, fraction: int, floor_bytes: int, low: int, high: int) -> int:
    """Rows of float32 working memory allowed beside ``n`` rows of ``dim``: the larger of
    ``n / fraction`` and ``floor_bytes``, clipped to [low, high]."""
    rows = max(n // fraction, floor_bytes // (4 * dim))
    return max(1, low, min(rows, high))


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of the named "ivf-pq" index for vectors of ``dim``."""
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


def resolve_kind(
    choice: str,
    n: int,
    dim: int,
    element_size: int,
    budget: int | None,
    faiss_available: bool,
    compressed: bool = False,
    id_bytes: int = 0,
) -> str:
    """The index for ``n`` rows of ``dim``: ``"exact"`` or a faiss factory string.

    Args:
        choice: the index asked for (one of ``NAMED_INDEXES`` or a faiss factory string).
        element_size: bytes per stored value of the rows (4 for float32).
        budget: ``memory_budget_bytes`` (None: no limit).
        faiss_available: whether faiss can be imported ("auto" falls back to exact without it).
        compressed: "auto" skips the exact index (a streamed build).
        id_bytes: bytes per row of stored ids (8 when ids are given), counted against ``budget``.
    """
    if choice == "auto":
        fits = budget is None or n * dim * element_size <= budget
        if n < AUTO_EXACT_MAX_ROWS and fits and not compressed:
            return "exact"
        if not faiss_available:
            if fits:
                return "exact"
            raise ImportError(
                f"{n} vectors of dim {dim} ({n * dim * element_size} bytes) exceed "
                f"memory_budget_bytes={budget} and a compressed index needs "
                "faiss: `pip install faiss-cpu` (or faiss-gpu)."
            )
        return auto_compressed(n, dim, id_bytes, budget)
    if choice == "exact":
        return "exact"
    nlist = choose_nlist(n)
    return {
        "flat": "Flat",
        "ivf": f"IVF{nlist},Flat",
        "ivf-sq8": f"IVF{nlist},SQ8",
        "ivf-pq": f"IVF{nlist},PQ{pq_subquantizers(dim)}",
        "hnsw": f"HNSW{HNSW_M}",
    }.get(choice, choice)


def auto_compressed(n: int, dim: int, id_bytes: int, budget: int | None) -> str:
    """IVF-SQ8 when it fits ``budget``, else IVF-PQ with the most sub-quantizers that fit.

    Sizes are those ``NeighborIndex.memory_bytes`` reports: coarse centroids, codebooks, one code
    and one 8-byte label per row, plus ``id_bytes`` per row of stored ids.
    """
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


def renumber_lists(kind: str, rows: int) -> str:
    """``kind`` with its IVF list count set for ``rows`` (a streamed build's planned size)."""
    return re.sub(r"IVF\d+", f"IVF{choose_nlist(rows)}", kind)


def stream_training_rows(rows: int, train_size: int | None) -> int:
    """Rows a streamed build buffers to train on: ``train_size``, or enough for its lists."""
    return train_size or min(rows, max(choose_nlist(rows) * TRAIN_POINTS_PER_LIST, 256 * 256))
