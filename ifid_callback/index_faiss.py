"""faiss indexes over a bank: create, train, fill and search them with row positions as labels.

Every faiss index here holds float32 rows (unit rows for the cosine distance, so that squared L2
gives 2 - 2 cos) labelled with their positions 0..N-1 in build or arrival order. Copies
(``copy.deepcopy``, pickle, ``torch.save``) carry the index serialised by faiss, so a copy owns
its rows and answers like the original.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ifid_callback.index_policy import (
    ADD_BATCH,
    ADD_BYTES,
    ADD_FRACTION,
    HNSW_M,
    KMEANS_ITERS,
    MIN_TRAIN_POINTS_PER_LIST,
    NAMED_INDEXES,
    TRAIN_BYTES,
    TRAIN_FRACTION,
    TRAIN_POINTS_PER_LIST,
    choose_nlist,
    default_nprobe,
    transient_rows,
)

# The most lists a GPU IVF index scans per query.
_GPU_MAX_NPROBE = 2048


def faiss_module() -> Any:
    """The faiss module, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this index needs faiss: `pip install faiss-cpu` (or `pip install faiss-gpu` for CUDA); "
            "index='exact' or 'auto' work without it."
        ) from err
    return faiss


def has_faiss() -> bool:
    """Whether faiss can be imported here."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class FaissSettings:
    """What shapes a faiss index beyond its factory string.

    Attributes:
        distance: ``"cosine"`` (rows stored L2-normalised) or ``"sqeuclidean"``.
        seed: seeds the training subsample and k-means.
        nprobe: IVF lists scanned per query (HNSW: efSearch); None: from the number of lists.
    """

    distance: str
    seed: int
    nprobe: int | None


def prep_rows(x: Tensor, distance: str, owned: bool = False) -> np.ndarray:
    """float32, C-contiguous numpy rows for faiss (unit rows for cosine), in one copy.

    ``owned``: ``x`` is already a private float32 CPU tensor, normalised in place.
    """
    owned = owned and x.dtype == torch.float32 and x.device.type == "cpu"
    x = x.detach().to("cpu", torch.float32, copy=not owned).contiguous()
    if distance == "cosine":
        x /= torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(
            torch.finfo(torch.float32).tiny
        )
    return x.numpy()


def train_sample(vectors: Tensor, seed: int) -> Tensor:
    """A seeded subsample of ``vectors`` (N, D) to train on: a private float32 CPU tensor."""
    n, dim = vectors.shape
    nlist = choose_nlist(n)
    limit = transient_rows(
        n, dim, TRAIN_FRACTION, TRAIN_BYTES, nlist * MIN_TRAIN_POINTS_PER_LIST, n
    )
    want = min(n, nlist * TRAIN_POINTS_PER_LIST, max(ADD_BATCH, 256 * 256), limit)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=g)[:want].sort().values
    sample = vectors[rows.to(vectors.device)]  # a copy, in the storage dtype
    return sample.to("cpu", torch.float32)


def _to_gpus(index: Any, what: str) -> tuple[Any, bool]:
    """``index`` on every visible GPU (sharded across several), or as it was when it cannot be."""
    faiss = faiss_module()
    if faiss.get_num_gpus() == 0:
        return index, False
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        return faiss.index_cpu_to_all_gpus(index, co=options), True
    except (RuntimeError, AttributeError) as err:  # e.g. PQ sizes the GPU does not support
        # Called from FaissRows.trained via build()/build_streaming(): point at their caller.
        warnings.warn(f"{what} stays on CPU: {err}", stacklevel=5)
        return index, False


def _fixed_bytes(index: Any) -> tuple[int, int]:
    """(fixed bytes, bytes per added vector) of a trained, empty CPU faiss index."""
    faiss = faiss_module()
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
        return 0, index.d * 4 + (2 * HNSW_M + HNSW_M // 4) * 4 + 4 + 8
    if getattr(inner, "code_size", None):
        return 0, int(inner.code_size)
    return 0, index.d * 4


class FaissRows:
    """A trained faiss index whose labels are the positions of the rows added to it.

    Made by :meth:`trained` (empty) or :func:`build_faiss` (filled); rows are appended with
    :meth:`add`. Pickling serialises the index (a GPU index through a CPU copy) and restores it
    on the GPU(s) when the original was there and faiss sees a GPU, else on the CPU.

    Attributes:
        index: the faiss index (CPU, GPU, or GPU shards).
        on_gpu: whether ``index`` lives on GPU(s).
        is_ivf: whether it is an IVF index (labels kept per list, given explicitly).
        fixed: (fixed bytes, bytes per added row) of the index, measured on the CPU index.
        distance: ``"cosine"`` or ``"sqeuclidean"``.
        n: rows added so far.
    """

    def __init__(
        self, index: Any, on_gpu: bool, is_ivf: bool, fixed: tuple[int, int], distance: str
    ) -> None:
        self.index = index
        self.on_gpu = on_gpu
        self.is_ivf = is_ivf
        self.fixed = fixed
        self.distance = distance
        self.n = 0

    @classmethod
    def trained(
        cls, kind: str, dim: int, train: Tensor | None, cuda: bool, settings: FaissSettings
    ) -> FaissRows:
        """An empty faiss index ``kind`` for rows of ``dim``, trained on ``train`` when it needs
        training (``train`` is a private float32 CPU tensor, normalised in place), moved to the
        GPU(s) when ``cuda`` and faiss has GPU support (HNSW stays on the CPU)."""
        faiss = faiss_module()
        try:
            index = faiss.index_factory(dim, kind, faiss.METRIC_L2)
        except RuntimeError as err:
            raise ValueError(
                f"faiss cannot build index={kind!r} for dim {dim}: {err}. Use one of "
                f"{NAMED_INDEXES} or a valid faiss factory string such as 'IVF1024,SQ8'."
            ) from err
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.niter = KMEANS_ITERS
            ivf.cp.seed = settings.seed
            ivf.cp.min_points_per_centroid = 1  # we sample enough points ourselves
            ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            ivf.nprobe = settings.nprobe or default_nprobe(ivf.nlist)
            pq = getattr(faiss.downcast_index(ivf), "pq", None)
            if pq is not None:
                pq.cp.niter = KMEANS_ITERS
                pq.cp.seed = settings.seed
                pq.cp.min_points_per_centroid = 1  # small banks: fewer points than 39 * 256
            if hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
                # Only for polysemous filtering, which we do not use; it dominates PQ training.
                faiss.downcast_index(ivf).do_polysemous_training = False
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = max(settings.nprobe or 64, 16)
        if not index.is_trained:
            if train is None or len(train) == 0:
                raise ValueError(f"index {kind!r} needs training vectors.")
            index.train(prep_rows(train, settings.distance, owned=True))
        fixed = _fixed_bytes(index)
        on_gpu = False
        if cuda and hnsw is None:
            # Train on CPU, add and search on the GPU(s).
            index, on_gpu = _to_gpus(index, f"faiss index {kind!r}")
        return cls(index, on_gpu, ivf is not None, fixed, settings.distance)

    @property
    def memory_bytes(self) -> int:
        """Bytes held: centroids and codebooks plus codes, labels and links of the rows."""
        return self.fixed[0] + self.fixed[1] * self.n

    def add(self, chunk: Tensor) -> None:
        """Append the rows of ``chunk`` (B, D): faiss labels them ``n, n + 1, ...``."""
        x = prep_rows(chunk, self.distance)
        if self.is_ivf:  # IVF keeps labels per list: give the positions explicitly
            self.index.add_with_ids(x, np.arange(self.n, self.n + len(chunk), dtype=np.int64))
        else:
            self.index.add(x)  # labels are the insertion positions
        self.n += len(chunk)

    def _query(self, x: np.ndarray, kk: int, exhaustive: bool = False) -> tuple[Tensor, Tensor]:
        faiss = faiss_module()
        ivf = None if self.on_gpu else faiss.try_extract_index_ivf(self.index)
        saved = None
        if exhaustive:
            if ivf is not None:
                saved, ivf.nprobe = ivf.nprobe, ivf.nlist
            elif self.on_gpu and hasattr(self.index, "nprobe"):
                saved, self.index.nprobe = self.index.nprobe, _GPU_MAX_NPROBE
        try:
            d, lab = self.index.search(x, kk)
        finally:
            if saved is not None:
                if ivf is not None:
                    ivf.nprobe = saved
                else:
                    self.index.nprobe = saved
        d_t = torch.from_numpy(d).clamp_min(0.0)
        if self.distance == "cosine":
            d_t = (d_t / 2.0).clamp_max(2.0)  # ||a-b||^2 = 2 - 2 cos for unit vectors
        return d_t, torch.from_numpy(lab)  # positions; -1 where fewer rows were found

    def search(
        self, queries: Tensor, k: int, exclude: Tensor | None, ids: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest rows of each query, skipping rows whose id is the query's exclude id.

        Args:
            queries: (Q, D) checked queries.
            k: neighbours per query, at most :attr:`n`.
            exclude: optional (Q,) int64 CPU ids, one per query.
            ids: (N,) int64 ids of the rows by position, or None when ids are positions.

        Returns:
            (Q, k) float32 distances ascending and (Q, k) int64 positions, on the CPU. Asks faiss
            for more neighbours (at last scanning every list) while some query has fewer than
            ``k`` rows left after exclusion; ValueError when even that is not enough.
        """
        x = prep_rows(queries, self.distance)
        q = len(x)
        out_d = torch.empty(q, k, dtype=torch.float32)
        out_i = torch.empty(q, k, dtype=torch.int64)
        todo = torch.arange(q)
        kk = k + (1 if exclude is not None else 0)
        exhaustive = False
        while len(todo):
            kk = min(kk, self.n)
            d, lab = self._query(x[todo.numpy()], kk, exhaustive)
            valid = lab >= 0  # -1: fewer than kk rows found in the probed lists
            if exclude is not None:
                found_ids = ids[lab.clamp_min(0).to(ids.device)].cpu() if ids is not None else lab
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
            if kk >= self.n:
                if exhaustive:
                    raise ValueError(
                        f"k={k} but some query has fewer than {k} indexed rows with an id "
                        "other than its exclude id; use a smaller k or a larger bank."
                    )
                exhaustive = True  # last resort: scan every list
            kk *= 2  # many rows share the excluded id (or lists were short): ask for more
        return out_d, out_i

    def __getstate__(self) -> dict[str, Any]:
        # faiss cannot serialise a GPU index: a CPU copy of it travels instead.
        faiss = faiss_module()
        state = dict(self.__dict__)
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        state["index"] = faiss.serialize_index(cpu)  # uint8 numpy array
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        faiss = faiss_module()
        state = dict(state)
        index = faiss.deserialize_index(np.asarray(state["index"], dtype=np.uint8))
        if state["on_gpu"]:
            index, state["on_gpu"] = _to_gpus(index, "the copied faiss index")
        state["index"] = index
        self.__dict__.update(state)


def build_faiss(vectors: Tensor, kind: str, cuda: bool, settings: FaissSettings) -> FaissRows:
    """A faiss index ``kind`` over ``vectors`` (N, D), trained on a seeded subsample and filled
    in float32 chunks of bounded size (see ``ADD_FRACTION``)."""
    n, dim = vectors.shape
    train = train_sample(vectors, settings.seed)
    rows = FaissRows.trained(kind, dim, train, cuda, settings)
    del train
    step = transient_rows(n, dim, ADD_FRACTION, ADD_BYTES, 256, ADD_BATCH)
    for start in range(0, n, step):
        rows.add(vectors[start : start + step])
    return rows
