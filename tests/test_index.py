"""Tests for NeighborIndex: exact and faiss backends against brute force, recall, exclusion, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ifid_callback.index import NAMED_INDEXES, NeighborIndex

faiss = pytest.importorskip("faiss")

# PQ at 1/16 of fp32 loses some true neighbours to quantization (no re-ranking).
PQ_MIN_RECALL = 0.8


def clustered(
    n: int, dim: int, seed: int, centers_seed: int = 0, clusters: int = 32
) -> torch.Tensor:
    """Gaussian mixture on low-rank patches plus isotropic noise (latent-like: low intrinsic dim)."""
    g = torch.Generator().manual_seed(centers_seed)
    centers = torch.randn(clusters, dim, generator=g)
    bases = torch.randn(clusters, 8, dim, generator=g) / math.sqrt(8)
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, clusters, (n,), generator=g)
    x = 0.05 * torch.randn(n, dim, generator=g)
    coef = torch.randn(n, 8, generator=g)
    for c in range(clusters):
        rows = which == c
        x[rows] += centers[c] + coef[rows] @ bases[c]
    return x


@pytest.fixture(scope="module")
def latents() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    bank = clustered(20_000, 256, seed=1)
    queries = clustered(500, 256, seed=2)
    # Ground truth from scipy (cosine), independent of the code under test.
    truth = cdist(queries.numpy(), bank.numpy(), metric="cosine").argmin(1)
    return bank, queries, truth


def _brute_topk(
    q: torch.Tensor, b: torch.Tensor, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    full = cdist(q.double().numpy(), b.double().numpy(), metric=metric)
    pos = np.argsort(full, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(full, pos, 1), pos


@pytest.mark.parametrize("distance, metric", [("cosine", "cosine"), ("sqeuclidean", "sqeuclidean")])
def test_exact_and_flat_match_brute_force(distance: str, metric: str) -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(500, 24, generator=g)
    queries = torch.randn(50, 24, generator=g)
    ids = torch.arange(500) * 10 + 3
    ref_d, ref_pos = _brute_topk(queries, bank, 5, metric)
    for kind in ("exact", "flat"):
        index = NeighborIndex(kind, distance=distance).build(bank, ids)
        d, found = index.search(queries, k=5)
        assert d.dtype == torch.float32 and found.dtype == torch.int64
        np.testing.assert_array_equal(found.numpy(), ids.numpy()[ref_pos])
        np.testing.assert_allclose(d.numpy(), ref_d, rtol=1e-4, atol=1e-4)
    assert NeighborIndex("flat").build(bank).kind == "Flat"


def _recall(index: NeighborIndex, queries: torch.Tensor, truth: np.ndarray) -> float:
    _, found = index.search(queries, k=1)
    return float((found[:, 0].numpy() == truth).mean())


@pytest.fixture(scope="module")
def sq8(latents: tuple[torch.Tensor, torch.Tensor, np.ndarray]) -> NeighborIndex:
    return NeighborIndex("ivf-sq8", seed=0).build(latents[0])


def test_ivf_sq8_recall(
    latents: tuple[torch.Tensor, torch.Tensor, np.ndarray], sq8: NeighborIndex
) -> None:
    bank, queries, truth = latents
    index = sq8
    assert index.kind.startswith("IVF") and index.kind.endswith("SQ8")
    assert _recall(index, queries, truth) >= 0.95
    # 1 byte per dim + 8-byte id + the centroids amortised over 20k rows.
    assert index.memory_per_vector <= 0.3 * 4 * bank.shape[1]


def test_ivf_pq_recall() -> None:
    # PQ training is costly on CPU (one k-means per sub-vector): a smaller bank keeps it fast.
    bank = clustered(4000, 64, seed=1)
    queries = clustered(300, 64, seed=2)
    truth = cdist(queries.numpy(), bank.numpy(), metric="cosine").argmin(1)
    index = NeighborIndex("ivf-pq", seed=0).build(bank)
    assert index.kind.startswith("IVF") and "PQ16" in index.kind
    assert _recall(index, queries, truth) >= PQ_MIN_RECALL
    assert index.memory_per_vector <= 0.25 * 4 * 64


def test_self_exclusion_through_faiss(
    latents: tuple[torch.Tensor, torch.Tensor, np.ndarray],
) -> None:
    bank, _, _ = latents
    bank = bank[:4000]
    ids = torch.arange(4000) + 100
    # Rows 0..9 also stored as exact copies under ids 5000..5009.
    dup = torch.cat([bank, bank[:10]])
    dup_ids = torch.cat([ids, torch.arange(5000, 5010)])
    for kind in ("flat", "ivf-sq8", "hnsw"):
        index = NeighborIndex(kind).build(dup, dup_ids)
        d, found = index.search(bank[:50], k=3, exclude=ids[:50])
        assert not bool((found == ids[:50, None]).any()), kind
        assert found[:10, 0].tolist() == list(range(5000, 5010)), kind
        assert float(d[:10, 0].abs().max()) < 1e-2, kind


def test_repeated_ids_need_retry() -> None:
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(300, 16, generator=g)
    ids = torch.arange(300) // 6  # six rows per id: excluding one id drops six hits
    queries = bank[::6] + 0.01 * torch.randn(50, 16, generator=g)
    exclude = torch.arange(50)
    ref = NeighborIndex("exact").build(bank, ids).search(queries, k=4, exclude=exclude)
    d, found = NeighborIndex("flat").build(bank, ids).search(queries, k=4, exclude=exclude)
    assert not bool((found == exclude[:, None]).any())
    torch.testing.assert_close(found, ref[1])
    torch.testing.assert_close(d, ref[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="k=295"):
        NeighborIndex("flat").build(bank, ids).search(queries, k=295, exclude=exclude)


def test_streaming_matches_one_shot(
    latents: tuple[torch.Tensor, torch.Tensor, np.ndarray], sq8: NeighborIndex
) -> None:
    bank, queries, truth = latents
    one_shot = _recall(sq8, queries, truth)
    chunks = (bank[i : i + 3000] for i in range(0, len(bank), 3000))
    index = NeighborIndex("ivf-sq8").build_streaming(chunks, total=len(bank))
    assert len(index) == len(bank) and index.dim == 256
    streamed = _recall(index, queries, truth)
    assert streamed >= 0.95 and abs(streamed - one_shot) <= 0.03
    # Explicit ids travel with the chunks.
    pairs = ((bank[i : i + 5000], torch.arange(i, i + 5000) + 7) for i in range(0, 10_000, 5000))
    index = NeighborIndex("ivf-sq8").build_streaming(pairs)
    _, found = index.search(bank[:20], k=1, exclude=torch.arange(20) + 7)
    assert not bool((found == torch.arange(20)[:, None] + 7).any())
    assert int(found.min()) >= 7 and int(found.max()) < 10_007


def test_streaming_auto_small_total_is_exact() -> None:
    x = torch.randn(1000, 8)
    index = NeighborIndex("auto").build_streaming([x[:600], x[600:]], total=1000)
    assert index.kind == "exact" and len(index) == 1000
    _, found = index.search(x[:5], k=1, exclude=torch.arange(5))
    assert not bool((found[:, 0] == torch.arange(5)).any())


def test_auto_policy() -> None:
    x = torch.randn(2000, 32)
    index = NeighborIndex("auto").build(x)
    assert index.kind == "exact"
    # fp32 rows plus one fp32 norm per row, computed once at build.
    assert index.memory_bytes == 2000 * (32 * 4 + 4) and index.memory_per_vector == 132
    # Over the memory budget the bank is compressed (SQ8 with its tables: 103,168 bytes).
    small = NeighborIndex("auto", memory_budget_bytes=110_000).build(x)
    assert small.kind.startswith("IVF") and small.kind.endswith("SQ8")
    assert small.memory_bytes <= 110_000


def test_result_device_and_half_storage() -> None:
    x = torch.randn(300, 16).to(torch.bfloat16)
    d, found = NeighborIndex("exact").build(x).search(x[:4].float(), k=2, exclude=torch.arange(4))
    ref_d, ref_pos = _brute_topk(x[:4].float(), x.float(), 300, "cosine")
    ref_pos = ref_pos[:, 1:3]  # column 0 is the query itself
    np.testing.assert_array_equal(found.numpy(), ref_pos)
    assert d.device == torch.device("cpu")


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="ivf-sq8"):
        NeighborIndex("ivf_sq8")
    with pytest.raises(ValueError, match="distance"):
        NeighborIndex(distance="l2")
    with pytest.raises(ValueError, match="factory"):
        NeighborIndex("IVF-nonsense").build(torch.randn(100, 8))
    with pytest.raises(ValueError, match="empty"):
        NeighborIndex().build(torch.randn(0, 8))
    with pytest.raises(ValueError, match="build"):
        NeighborIndex().search(torch.randn(2, 8))
    index = NeighborIndex("flat").build(torch.randn(20, 8))
    with pytest.raises(ValueError, match="dim 8"):
        index.search(torch.randn(2, 9))
    with pytest.raises(ValueError, match="k=21"):
        index.search(torch.randn(2, 8), k=21)
    with pytest.raises(ValueError, match="NaN"):
        index.search(torch.full((1, 8), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        NeighborIndex().build(torch.full((3, 8), float("inf")))
    with pytest.raises(ValueError, match="k=20"):
        NeighborIndex("exact").build(torch.randn(20, 8)).search(
            torch.randn(2, 8), k=20, exclude=torch.arange(2)
        )
    # A failed build leaves the previous content in place.
    with pytest.raises(ValueError):
        index.build(torch.randn(0, 8))
    assert len(index) == 20 and index.kind == "Flat"
    assert set(NAMED_INDEXES) >= {"auto", "exact", "flat", "ivf", "ivf-sq8", "ivf-pq", "hnsw"}
