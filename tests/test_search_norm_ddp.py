"""search_norm="bn_channel" under torch.distributed: statistics of the gathered reference, so
two ranks with half the bank each (or the same whole bank each) give the single-process iFID."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, run_ranks, smooth_images
from tests.test_search_norm import decode, encode

QUERIES, REFERENCE = 32, 48


def _ifid(bank, rank, world, **kwargs):
    metric = InterpolatedFID(
        encode, decode, feature=RandomFeatures(3 * 8 * 8, 8), bank=bank, index="exact", **kwargs
    )
    for batch in smooth_images(QUERIES, seed=1)[rank::world].split(8):
        metric.update(batch)
    return float(metric.compute()["ifid"])


def _bank(rows):
    bank = LatentBank(capacity=REFERENCE)
    bank.add(rows)
    return bank


def _reference():
    return encode(smooth_images(REFERENCE, seed=2))


def _rank(rank, world, bank_file):
    out = {
        "halves": _ifid(_bank(_reference()[rank::world]), rank, world, search_norm="bn_channel"),
        "self": _ifid(None, rank, world, search_norm="bn_channel"),
    }
    whole = LatentBank(capacity=REFERENCE)
    whole.load_state_dict(torch.load(bank_file))
    out["restored"] = _ifid(whole, rank, world, search_norm="bn_channel")
    return out


def test_two_ranks_match_one_process(tmp_path, one_thread):
    full = _bank(_reference())
    single = _ifid(full, 0, 1, search_norm="bn_channel")
    single_self = _ifid(None, 0, 1, search_norm="bn_channel")
    # Statistics of half the bank would search elsewhere: the variant sees the difference.
    assert _ifid(full, 0, 1) != pytest.approx(single, rel=1e-3)
    bank_file = str(tmp_path / "full.bank")
    torch.save(full.state_dict(), bank_file)
    for out in run_ranks(_rank, 2, tmp_path, bank_file):
        assert out["halves"] == pytest.approx(single, rel=1e-6)
        assert out["restored"] == pytest.approx(single, rel=1e-6)
        assert out["self"] == pytest.approx(single_self, rel=1e-6)
