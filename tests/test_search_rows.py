"""A found neighbour is exactly the row the search found, even when ids repeat."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.index import NeighborIndex
from tests.helpers import RandomFeatures, decode, encode

KINDS = ["exact", "flat", "hnsw", "IVF2,Flat"]


def needs_faiss(kind: str) -> None:
    if kind != "exact":
        pytest.importorskip("faiss")


def repeated_id_rows(dim: int = 16, n: int = 64, seed: int = 0):
    """Rows with unique ids except id 7, held by a far 'stale' row and by the query's twin."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, dim, generator=g)
    ids = torch.arange(1000, 1000 + n)
    query = torch.randn(1, dim, generator=g)
    stale, near = 5, 40
    rows[stale] = -3 * query[0]  # the row first met under id 7: far from the query
    rows[near] = query[0] + 0.01 * torch.randn(dim, generator=g)  # the one the search finds
    ids[stale] = ids[near] = 7
    return rows, ids, query, stale, near


def two_queries_one_id():
    """Two queries whose nearest rows are different rows that share one id."""
    rows, ids, query, stale, near = repeated_id_rows(dim=3 * 4 * 4)
    g = torch.Generator().manual_seed(1)
    other = rows[stale] + 0.01 * torch.randn(rows.shape[1], generator=g)
    return rows, ids, torch.cat([query, other[None]]), [near, stale]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
def test_search_rows_returns_positions_of_the_rows_found(kind, distance):
    needs_faiss(kind)
    rows, ids, query, stale, near = repeated_id_rows()
    index = NeighborIndex(kind, distance=distance).build(rows, ids)
    d, pos = index.search_rows(query, k=3)
    assert int(pos[0, 0]) == near
    assert torch.equal(index.ids_of(pos), ids[pos])
    # search() still answers ids, the labels of those rows.
    d_ids, found = index.search(query, k=3)
    assert torch.equal(found, ids[pos]) and torch.allclose(d_ids, d)
    # Brute force: the positions are the k nearest rows.
    if distance == "cosine":
        dist = 1 - torch.nn.functional.cosine_similarity(query, rows)
    else:
        dist = ((rows - query) ** 2).sum(1)
    assert set(pos[0].tolist()) == set(dist.argsort()[:3].tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_search_rows_with_exclusion_skips_every_row_of_the_id(kind):
    needs_faiss(kind)
    rows, ids, query, stale, near = repeated_id_rows()
    index = NeighborIndex(kind).build(rows, ids)
    _, pos = index.search_rows(query, k=2, exclude=torch.tensor([7]))
    assert near not in pos[0].tolist() and stale not in pos[0].tolist()
    assert (index.ids_of(pos) != 7).all()


@pytest.mark.parametrize("kind", ["exact", "flat"])
def test_metric_interpolates_the_row_the_search_found(kind):
    needs_faiss(kind)
    rows, ids, queries, nearest = two_queries_one_id()
    bank = LatentBank(capacity=64)
    bank.add(rows.reshape(-1, 3, 4, 4), ids=ids)
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(3 * 8 * 8), bank=bank, index=kind
    )
    z_nn, found = metric.neighbors(queries.reshape(2, 3, 4, 4))
    assert found.tolist() == [7, 7]
    # Any lookup by id gives both queries the same row; the rows found differ.
    assert torch.equal(z_nn.reshape(2, -1), rows[nearest])


def test_streamed_index_positions_follow_arrival_order():
    pytest.importorskip("faiss")
    rows, ids, query, stale, near = repeated_id_rows()
    index = NeighborIndex("IVF2,Flat").build_streaming(
        [(rows[:30], ids[:30]), (rows[30:], ids[30:])], total=len(rows), train_size=64
    )
    _, pos = index.search_rows(query, k=1)
    assert int(pos[0, 0]) == near and int(index.ids_of(pos)[0, 0]) == 7
