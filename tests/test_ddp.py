"""Two CPU processes (gloo) give the same iFID/rFID as one process on the same images."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images

QUERIES = 48
IN_DIM = 3 * 8 * 8


def _run(use_bank: bool, rank: int, world: int) -> dict:
    queries = smooth_images(QUERIES, seed=1)
    bank = None
    if use_bank:
        bank = LatentBank(capacity=64)
        bank.add(encode(smooth_images(64, seed=2)))
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    # Each rank takes its own share of the queries, in batches of 8.
    for batch in queries[rank::world].split(8):
        metric.update(batch)
    out = {k: float(v) for k, v in metric.compute().items()}
    out["n"] = int(metric.real_num_samples)
    return out


def _rank(rank: int, world: int, use_bank: bool) -> dict:
    out = _run(use_bank, rank, world)
    # The bank gathers across ranks: each rank added different rows.
    bank = LatentBank(capacity=8)
    bank.add(torch.full((rank + 1, 3), float(rank)))
    vectors, ids = bank.gather()
    out["gathered"] = vectors[:, 0].tolist()
    out["gathered_ids"] = ids.tolist()
    return out


@pytest.mark.parametrize("use_bank", [True, False], ids=["bank", "self-reference"])
def test_two_processes_match_one(tmp_path, use_bank):
    single = _run(use_bank, 0, 1)
    for out in run_ranks(_rank, 2, tmp_path, use_bank):
        assert out["ifid"] == pytest.approx(single["ifid"], rel=1e-6)
        assert out["rfid"] == pytest.approx(single["rfid"], rel=1e-6)
        assert out["gathered"] == [0.0, 1.0, 1.0]
        assert len(set(out["gathered_ids"])) == 3  # automatic ids are unique across ranks
    # Each rank kept only its own share of the real statistics locally.
    assert out["n"] == QUERIES // 2
