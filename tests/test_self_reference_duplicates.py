"""Without a bank (the queries are their own reference, ``ifid eval`` without ``--reference``),
pixel-identical queries are one image: never each other's neighbour, and counted."""

from __future__ import annotations

import pytest
import torch

from ifid_callback import InterpolatedFID
from ifid_callback.evaluate import evaluate_vae
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images
from tests.test_reference_overlap import IN_DIM, SIZE, _brute_force


def _metric():
    return InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=None
    )


def _with_copies() -> tuple[torch.Tensor, torch.Tensor]:
    """20 distinct images, then a shuffled second copy of each and a third of image 3: 41."""
    distinct = smooth_images(20, 3, SIZE, seed=1)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    return distinct, torch.cat([distinct, distinct[order], distinct[3:4]])


def test_copies_are_not_each_others_neighbour_and_ifid_matches_brute_force():
    """Brute force: the nearest neighbour among images with other pixels (every copy of the
    query left out), scipy FID over all 41 rows. Measured iFID/rFID: 1.00 when copies were
    neighbours (iFID = rFID); now as by hand, 2.6x, about the 20 distinct images' own ratio."""
    distinct, queries = _with_copies()
    metric = _metric()
    for batch in queries.split(7):  # copies in other batches than their originals
        metric.update(batch)
    out = metric.compute()
    ifid, rfid = _brute_force(queries, queries)
    assert float(out["ifid"]) == pytest.approx(ifid, rel=1e-4)
    assert float(out["rfid"]) == pytest.approx(rfid, rel=1e-4)
    assert metric.last_duplicate_queries == 21
    ratio = float(out["ifid"] / out["rfid"])
    alone = _metric()
    alone.update(distinct)
    found = alone.compute()
    assert alone.last_duplicate_queries == 0
    assert ratio > 1.5
    assert ratio == pytest.approx(float(found["ifid"] / found["rfid"]), rel=0.15)


def test_evaluate_without_a_reference_counts_duplicate_queries():
    _, queries = _with_copies()
    result = evaluate_vae(
        encoder=encode,
        decoder=decode,
        query_loader=list(queries.split(5)),
        feature=RandomFeatures(IN_DIM),
        progress=False,
    )
    assert result["duplicate_queries"] == 21
    ifid, _ = _brute_force(queries, queries)
    assert result["ifid"] == pytest.approx(ifid, rel=1e-4)


def test_all_queries_the_same_image_is_refused_and_the_round_survives():
    image = smooth_images(1, 3, SIZE, seed=4)
    metric = _metric()
    metric.update(image.expand(6, -1, -1, -1))
    with pytest.raises(ValueError, match="same pixels"):
        metric.compute()
    metric.update(smooth_images(6, 3, SIZE, seed=5))  # the round goes on
    assert torch.isfinite(metric.compute()["ifid"])
    assert metric.last_duplicate_queries == 5


def _rank(rank: int, world: int) -> tuple[float, float, int]:
    _, queries = _with_copies()
    mine = torch.arange(rank, len(queries), world)  # copies on the other rank than their original
    metric = _metric()
    for part in mine.split(6):
        metric.update(queries[part], positions=part)
    out = metric.compute()
    return float(out["ifid"]), float(out["rfid"]), metric.last_duplicate_queries


def test_two_processes_find_the_copies_on_the_other_rank(tmp_path):
    _, queries = _with_copies()
    ifid, rfid = _brute_force(queries, queries)
    for got_ifid, got_rfid, duplicates in run_ranks(_rank, 2, tmp_path):
        assert duplicates == 21
        assert got_ifid == pytest.approx(ifid, rel=1e-4)
        assert got_rfid == pytest.approx(rfid, rel=1e-4)
