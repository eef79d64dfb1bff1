"""The bank is checked and its norms computed once per index build, never per search/update."""

import pytest
import torch

import ifid_callback.functional.neighbors as neighbors_module
import ifid_callback.index as index_module
from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.functional import nearest_neighbors
from ifid_callback.index import NeighborIndex
from tests.helpers import RandomFeatures, decode, encode, smooth_images


@pytest.fixture
def bank_passes(monkeypatch):
    """Count full passes over an (N, D) bank: finiteness checks and per-row norm computations."""
    passes = {"finite": 0, "norms": 0}
    rows = {"n": None}
    check = neighbors_module._check_finite
    scales = getattr(neighbors_module, "_row_scales", None)

    def counting_check(name, x):
        if rows["n"] is not None and x.shape[0] == rows["n"]:
            passes["finite"] += 1
        return check(name, x)

    def counting_scales(bank, *args, **kwargs):
        passes["norms"] += 1
        return scales(bank, *args, **kwargs)

    for module in (neighbors_module, index_module):
        monkeypatch.setattr(module, "_check_finite", counting_check)
        monkeypatch.setattr(module, "_row_scales", counting_scales, raising=False)
    # Also count the old per-chunk normalisation, should anything still call it.
    if hasattr(neighbors_module, "_prepare"):
        prepare = neighbors_module._prepare

        def counting_prepare(x, *args, **kwargs):
            passes["norms"] += 1
            return prepare(x, *args, **kwargs)

        monkeypatch.setattr(neighbors_module, "_prepare", counting_prepare)

    def watch(n):
        rows["n"] = n
        passes.update(finite=0, norms=0)
        return passes

    return watch


@pytest.mark.parametrize("distance", ["cosine", "sqeuclidean"])
def test_exact_index_searches_without_rechecking_the_bank(bank_passes, distance):
    x = torch.randn(500, 24)
    index = NeighborIndex("exact", distance=distance).build(x, torch.arange(500))
    passes = bank_passes(500)
    for _ in range(3):
        d, pos = index.search_rows(torch.randn(7, 24), k=3, exclude=torch.arange(7))
    assert passes == {"finite": 0, "norms": 0}
    # Still the exact answer.
    q = torch.randn(5, 24)
    d, pos = index.search_rows(q, k=4)
    want_d, want_pos = nearest_neighbors(q, x, k=4, distance=distance)
    assert torch.equal(pos, want_pos)
    torch.testing.assert_close(d, want_d)


def test_metric_updates_reuse_the_checks_of_the_refresh(bank_passes):
    bank = LatentBank(capacity=64)
    bank.add(encode(smooth_images(64, seed=1)))
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(3 * 8 * 8), bank=bank
    )
    passes = bank_passes(64)
    queries = smooth_images(32, seed=2)
    for batch in queries.split(8):
        metric.update(batch)
    assert passes == {"finite": 1, "norms": 1}  # the one refresh, at the first update
    bank.add(encode(smooth_images(1, seed=3)))  # changed: the next update refreshes once
    passes = bank_passes(64)
    for batch in queries.split(8):
        metric.update(batch)
    assert passes == {"finite": 1, "norms": 1}
