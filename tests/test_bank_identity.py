"""A built index answers for the bank the metric holds now: replaced or restored banks rebuild."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8


def make_metric(**kwargs):
    return InterpolatedFID(encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), **kwargs)


def filled_bank(seed: int, n: int = 40) -> LatentBank:
    bank = LatentBank(capacity=n)
    bank.add(encode(smooth_images(n, seed=seed)))
    return bank


def test_tokens_never_repeat_across_banks_changes_and_loads():
    a, b = LatentBank(capacity=4), LatentBank(capacity=4)
    tokens = [a.token, b.token]
    assert a.token is not b.token  # two new banks: both "version 0", never the same identity
    a.add(torch.randn(2, 3))
    tokens.append(a.token)
    state = a.state_dict()
    b.load_state_dict(state)
    tokens.append(b.token)
    a.load_state_dict(state)  # reloading the same state is still a new identity
    tokens.append(a.token)
    a.clear()
    tokens.append(a.token)
    # All kept alive in `tokens`, so distinct ids mean distinct objects.
    assert len({id(t) for t in tokens}) == len(tokens)


def test_swapping_banks_on_one_metric_matches_fresh_metrics():
    queries = smooth_images(24, seed=1)
    banks = [filled_bank(seed) for seed in (10, 11, 12)]
    expected = []
    for bank in banks:
        fresh = make_metric(bank=bank)
        fresh.update(queries)
        expected.append(float(fresh.compute()["ifid"]))
    assert len(set(expected)) == 3  # the banks give different numbers
    metric = make_metric(bank=banks[0])
    for bank, want in zip(banks, expected):
        metric.bank = bank
        metric.reset()
        metric.update(queries)
        assert float(metric.compute()["ifid"]) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("auto_refresh", [True, False])
def test_restored_bank_neighbours_come_from_restored_rows(auto_refresh):
    bank = LatentBank(capacity=40)
    for half in encode(smooth_images(40, seed=20)).split(20):
        bank.add(half)  # two changes: the count a restored one-add bank would resume at
    restored_from = filled_bank(21)
    metric = make_metric(bank=bank, auto_refresh_index=auto_refresh)
    z = encode(smooth_images(16, seed=2))
    metric.neighbors(z)  # builds the index over the first rows
    bank.load_state_dict(restored_from.state_dict())
    z_nn, ids = metric.neighbors(z)
    rows = restored_from.vectors
    flat = z_nn.reshape(len(z), -1)
    for row in flat:
        assert (rows == row).all(dim=1).any()
    # And the neighbours are the nearest restored rows (brute-force cosine).
    zn = torch.nn.functional.normalize(z.reshape(len(z), -1), dim=1)
    rn = torch.nn.functional.normalize(rows, dim=1)
    best = (zn @ rn.T).argmax(1)
    assert torch.equal(flat, rows[best])


def test_replacing_the_bank_rebuilds_even_without_auto_refresh():
    first, second = filled_bank(30), filled_bank(31)
    metric = make_metric(bank=first, auto_refresh_index=False)
    z = encode(smooth_images(8, seed=3))
    metric.neighbors(z)
    metric.bank = second
    z_nn, _ = metric.neighbors(z)
    rows = second.vectors
    for row in z_nn.reshape(len(z), -1):
        assert (rows == row).all(dim=1).any()


def test_without_auto_refresh_insertions_wait_for_refresh_index():
    bank = filled_bank(40)
    metric = make_metric(bank=bank, auto_refresh_index=False)
    z = encode(smooth_images(8, seed=4))
    before, _ = metric.neighbors(z)
    bank.add(z)  # exact copies of the queries, under new ids
    still, _ = metric.neighbors(z)
    assert torch.equal(before, still)  # the snapshot holds until the next refresh
    metric.refresh_index()
    now, _ = metric.neighbors(z)
    assert torch.equal(now, z)
