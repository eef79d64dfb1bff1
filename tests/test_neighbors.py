"""Tests for the exact nearest-neighbour search and the top-k pick (against brute force)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import chi2

from ifid_callback.functional.neighbors import nearest_neighbors, pick_neighbor


def _brute(queries: torch.Tensor, bank: torch.Tensor, distance: str) -> np.ndarray:
    """Full (Q, N) distance matrix from scipy, in float64."""
    q = queries.double().numpy()
    b = bank.double().numpy()
    if distance == "cosine":
        return cdist(q, b, metric="cosine")
    return cdist(q, b, metric="sqeuclidean")


@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("chunk_size", [None, 13, 64])
def test_matches_brute_force(distance: str, k: int, chunk_size: int | None) -> None:
    g = torch.Generator().manual_seed(k)
    bank = torch.randn(150, 12, generator=g)
    queries = torch.randn(40, 12, generator=g)
    d, pos = nearest_neighbors(queries, bank, k=k, distance=distance, chunk_size=chunk_size)
    full = _brute(queries, bank, distance)
    ref_pos = np.argsort(full, axis=1, kind="stable")[:, :k]
    assert d.dtype == torch.float32 and pos.dtype == torch.int64
    assert d.shape == pos.shape == (40, k)
    np.testing.assert_array_equal(pos.numpy(), ref_pos)
    np.testing.assert_allclose(
        d.numpy(), np.take_along_axis(full, ref_pos, 1), rtol=1e-5, atol=1e-5
    )
    assert bool((d[:, 1:] >= d[:, :-1]).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
def test_half_precision_storage(dtype: torch.dtype, distance: str) -> None:
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(200, 16, generator=g).to(dtype)
    queries = torch.randn(30, 16, generator=g)
    d, pos = nearest_neighbors(queries, bank, k=4, distance=distance, chunk_size=17)
    # Reference on exactly the stored (rounded) values.
    full = _brute(queries, bank.float(), distance)
    ref_pos = np.argsort(full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(pos.numpy(), ref_pos)
    np.testing.assert_allclose(
        d.numpy(), np.take_along_axis(full, ref_pos, 1), rtol=1e-5, atol=1e-5
    )
    assert d.dtype == torch.float32


def test_hand_computed_case() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]])
    q = torch.tensor([[2.0, 0.0]])
    d, pos = nearest_neighbors(q, bank, k=4, distance="cosine")
    # cos: 1, 0, -1 and the zero vector (treated as similarity 0).
    assert pos[0, 0].item() == 0 and pos[0, 3].item() == 2
    np.testing.assert_allclose(d[0].numpy(), [0.0, 1.0, 1.0, 2.0], atol=1e-7)
    d, pos = nearest_neighbors(q, bank, k=4, distance="sqeuclidean")
    assert pos[0].tolist() == [0, 3, 1, 2]
    np.testing.assert_allclose(d[0].numpy(), [1.0, 4.0, 8.0, 25.0])


def test_zero_vectors_never_nan() -> None:
    bank = torch.zeros(5, 3)
    q = torch.zeros(2, 3)
    d, _ = nearest_neighbors(q, bank, k=2, distance="cosine")
    assert torch.isfinite(d).all() and torch.allclose(d, torch.ones_like(d))


@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
def test_self_exclusion_by_id(distance: str) -> None:
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(60, 8, generator=g)
    queries = bank[:20]
    _, pos = nearest_neighbors(
        queries, bank, k=3, distance=distance, exclude=torch.arange(20), chunk_size=7
    )
    assert not bool((pos == torch.arange(20)[:, None]).any())
    full = _brute(queries, bank, distance)
    full[np.arange(20), np.arange(20)] = np.inf
    np.testing.assert_array_equal(pos.numpy(), np.argsort(full, axis=1, kind="stable")[:, :3])


@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
def test_exact_duplicate_under_another_id_is_returned(distance: str) -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(30, 8, generator=g)
    bank = torch.cat([base, base[:5]])  # rows 30..34 copy rows 0..4 under ids 30..34
    d, pos = nearest_neighbors(base[:5], bank, k=1, distance=distance, exclude=torch.arange(5))
    assert pos[:, 0].tolist() == [30, 31, 32, 33, 34]
    assert torch.allclose(d, torch.zeros_like(d), atol=1e-6)


def test_repeated_ids_all_excluded() -> None:
    g = torch.Generator().manual_seed(4)
    bank = torch.randn(40, 6, generator=g)
    ids = torch.arange(40) // 4  # every id appears on 4 rows
    queries = bank[::4] + 0.01 * torch.randn(10, 6, generator=g)
    d, pos = nearest_neighbors(
        queries, bank, k=5, exclude=torch.arange(10), bank_ids=ids, chunk_size=6
    )
    assert not bool((ids[pos] == torch.arange(10)[:, None]).any())
    full = _brute(queries, bank, "cosine")
    full[ids.numpy()[None, :] == np.arange(10)[:, None]] = np.inf
    np.testing.assert_array_equal(pos.numpy(), np.argsort(full, axis=1, kind="stable")[:, :5])
    # 36 rows remain for each query: k=36 is fine, 37 is not.
    nearest_neighbors(queries, bank, k=36, exclude=torch.arange(10), bank_ids=ids)
    with pytest.raises(ValueError, match="k=37"):
        nearest_neighbors(queries, bank, k=37, exclude=torch.arange(10), bank_ids=ids)


def test_validation_messages() -> None:
    bank = torch.randn(10, 4)
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="2-D"):
        nearest_neighbors(q[0], bank)
    with pytest.raises(ValueError, match="dim 5"):
        nearest_neighbors(torch.randn(3, 5), bank)
    with pytest.raises(ValueError, match="k=11"):
        nearest_neighbors(q, bank, k=11)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(q, bank, k=0)
    with pytest.raises(ValueError, match="distance"):
        nearest_neighbors(q, bank, distance="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbors(q, bank[:0])
    bad = bank.clone()
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match="row 7"):
        nearest_neighbors(q, bad)
    with pytest.raises(ValueError, match="Inf"):
        nearest_neighbors(torch.full((1, 4), float("inf")), bank)
    with pytest.raises(TypeError, match="floating"):
        nearest_neighbors(q.long(), bank)
    with pytest.raises(TypeError, match="int64"):
        nearest_neighbors(q, bank, exclude=torch.arange(3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        nearest_neighbors(q, bank, exclude=torch.arange(4))
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_neighbors(q, bank, chunk_size=0)


def test_pick_k1_and_reproducible() -> None:
    d = torch.rand(50, 1)
    c = torch.arange(50)[:, None]
    assert pick_neighbor(d, c).tolist() == list(range(50))
    d = torch.rand(50, 4)
    c = torch.arange(200).reshape(50, 4)
    for pick in ("uniform", "softmax"):
        a = pick_neighbor(d, c, pick, torch.Generator().manual_seed(7))
        b = pick_neighbor(d, c, pick, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
        assert bool(((a[:, None] == c).sum(1) == 1).all())  # one of each row's own candidates


def _chi_square_ok(counts: np.ndarray, probs: np.ndarray) -> bool:
    expected = probs * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat < chi2.ppf(0.999, len(counts) - 1)


def test_uniform_frequencies() -> None:
    k, n = 5, 20000
    d = torch.sort(torch.rand(n, k), dim=1).values
    c = torch.arange(k).repeat(n, 1)
    chosen = pick_neighbor(d, c, "uniform", torch.Generator().manual_seed(0))
    counts = np.bincount(chosen.numpy(), minlength=k)
    assert _chi_square_ok(counts, np.full(k, 1 / k))


def test_softmax_frequencies() -> None:
    k, n = 4, 20000
    dist = torch.tensor([0.0, 0.5, 1.0, 2.5])
    chosen = pick_neighbor(
        dist.repeat(n, 1), torch.arange(k).repeat(n, 1), "softmax", torch.Generator().manual_seed(1)
    )
    counts = np.bincount(chosen.numpy(), minlength=k)
    probs = np.exp(-dist.numpy().astype(np.float64))
    probs /= probs.sum()
    assert _chi_square_ok(counts, probs)
    np.testing.assert_allclose(counts / n, probs, atol=0.015)


def test_pick_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        pick_neighbor(torch.rand(3, 2), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pick"):
        pick_neighbor(torch.rand(3, 2), torch.zeros(3, 2, dtype=torch.long), "greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        pick_neighbor(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2, dtype=torch.long))
