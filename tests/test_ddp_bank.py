"""With a bank under DDP the reference is the banks of all ranks: any world size, one number."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images

QUERIES = 32
REFERENCE = 48


def _metric(bank: LatentBank, **kwargs) -> InterpolatedFID:
    return InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(3 * 8 * 8), bank=bank, **kwargs
    )


def _ifid(bank: LatentBank, rank: int, world: int, **kwargs) -> float:
    metric = _metric(bank, **kwargs)
    for batch in smooth_images(QUERIES, seed=1)[rank::world].split(8):
        metric.update(batch)
    return float(metric.compute()["ifid"])


def _reference() -> torch.Tensor:
    return encode(smooth_images(REFERENCE, seed=2))


def _rank(rank: int, world: int, bank_file: str) -> dict:
    out = {}
    # Half of the reference on each rank (automatic ids, unique across ranks).
    half = LatentBank(capacity=REFERENCE)
    half.add(_reference()[rank::world])
    out["halves"] = _ifid(half, rank, world)
    out["halves_no_auto"] = _ifid(half, rank, world, auto_refresh_index=False)
    # The whole reference restored from one checkpoint on every rank: each row counts once.
    whole = LatentBank(capacity=REFERENCE)
    whole.load_state_dict(torch.load(bank_file))
    out["restored"] = _ifid(whole, rank, world)
    metric = _metric(whole)
    out["rows"] = metric.refresh_index()
    return out


def test_two_processes_with_half_the_bank_each_match_one_with_all(tmp_path):
    full = LatentBank(capacity=REFERENCE)
    full.add(_reference())
    single = _ifid(full, 0, 1)
    # Under DDP each rank sees only its half: without the gather the number differs.
    assert _ifid(_half_bank(0), 0, 1) != pytest.approx(single, rel=1e-3)
    bank_file = str(tmp_path / "full.bank")
    torch.save(full.state_dict(), bank_file)
    for out in run_ranks(_rank, 2, tmp_path, bank_file):
        assert out["halves"] == pytest.approx(single, rel=1e-6)
        assert out["halves_no_auto"] == pytest.approx(single, rel=1e-6)
        assert out["restored"] == pytest.approx(single, rel=1e-6)
        assert out["rows"] == REFERENCE


def _half_bank(rank: int) -> LatentBank:
    bank = LatentBank(capacity=REFERENCE)
    bank.add(_reference()[rank::2])
    return bank


def test_drop_repeated_rows_keeps_distinct_rows_under_one_id():
    from ifid_callback.reference import drop_repeated_rows

    a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    vectors = torch.stack([a, b, a, c, b, a])
    ids = torch.tensor([7, 7, 7, 8, 7, 9])
    kept_v, kept_i = drop_repeated_rows(vectors, ids)
    assert kept_i.tolist() == [7, 7, 8, 9]
    assert torch.equal(kept_v, torch.stack([a, b, c, a]))
    # Nothing repeated: the very same tensors come back (no copy).
    v, i = drop_repeated_rows(vectors[:2], torch.tensor([1, 2]))
    assert v.data_ptr() == vectors.data_ptr()
