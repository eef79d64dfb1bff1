"""Random choices (posterior samples, top-k picks, mask positions, subsampling) are tied to each
query's position or id: equal across batchings, orders, world sizes, rounds and resumes."""

import pytest
import torch
from torch.utils.data import DataLoader

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.evaluate import _reencoder, evaluate_vae
from ifid_callback.functional import interpolate, pick_neighbor
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.randomness import key_seed, keyed_generators
from ifid_callback.tiny_vae import DiagonalGaussian, TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images

QUERIES = 48
IN_DIM = 3 * 8 * 8
# The configurations whose numbers depend on random draws: the paper protocol (posterior sample,
# top-10 softmax(-MSE) pick) and mask interpolation with a uniform top-3 pick, with a bank and
# without one (the queries as their own reference).
CONFIGS = {
    "paper-bank": ({"preset": "paper"}, True),
    "paper-self": ({"preset": "paper"}, False),
    "mask-bank": ({"interpolation": "mask", "k": 3}, True),
    "mask-self": ({"interpolation": "mask", "k": 3}, False),
}


def posterior_encode(x: torch.Tensor) -> DiagonalGaussian:
    """A Gaussian posterior around the pooled image: the paper preset samples from it."""
    mean = encode(x)
    return DiagonalGaussian(mean, torch.full_like(mean, -3.0))


def make_metric(config: str, rank: int = 0, world: int = 1, **kwargs) -> InterpolatedFID:
    settings, use_bank = CONFIGS[config]
    bank = None
    if use_bank:
        # Under DDP each rank holds its share of the reference; the metric gathers them.
        bank = LatentBank(capacity=64)
        bank.add(encode(smooth_images(64, seed=2))[rank::world], ids=torch.arange(64)[rank::world])
    return InterpolatedFID(
        encoder=posterior_encode,
        decoder=decode,
        feature=RandomFeatures(IN_DIM),
        bank=bank,
        **settings,
        **kwargs,
    )


def values(metric: InterpolatedFID) -> dict[str, float]:
    return {key: float(value) for key, value in metric.compute().items()}


def run(config: str, batch_sizes=(QUERIES,), order=None, rank=0, world=1) -> dict[str, float]:
    queries = smooth_images(QUERIES, seed=1)
    metric = make_metric(config, rank=rank, world=world)
    if order is None:
        share = queries[rank::world]
        start = 0
        sizes = list(batch_sizes)
        while start < len(share):
            size = sizes[0] if len(sizes) == 1 else sizes.pop(0)
            metric.update(share[start : start + size])
            start += size
    else:
        for part in order.split(7):
            metric.update(queries[part], positions=part)
    return values(metric)


# ------------------------------------------------------------------ one process
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_batching_does_not_change_the_numbers(config):
    whole = run(config)
    assert run(config, batch_sizes=(5,)) == pytest.approx(whole, rel=1e-9)
    assert run(config, batch_sizes=(1, 30, 17)) == pytest.approx(whole, rel=1e-9)


@pytest.mark.parametrize("config", ["paper-bank", "mask-self"])
def test_positions_tie_the_choices_to_the_images_not_the_order(config):
    whole = run(config)
    shuffled = torch.randperm(QUERIES, generator=torch.Generator().manual_seed(3))
    assert run(config, order=shuffled) == pytest.approx(whole, rel=1e-9)


def test_the_seed_still_matters_and_rounds_repeat():
    a = make_metric("paper-bank", seed=1)
    b = make_metric("paper-bank", seed=2)
    queries = smooth_images(QUERIES, seed=1)
    for m in (a, b):
        m.update(queries)
    first = values(a)
    assert first != values(b)
    a.reset()
    a.update(queries)  # a new round over the same queries draws the same choices
    assert values(a) == pytest.approx(first, rel=1e-12)


def test_functional_pieces_take_one_generator_per_row():
    d = torch.rand(6, 4)
    c = torch.arange(24).reshape(6, 4)
    rows = pick_neighbor(d, c, "softmax", keyed_generators(0, range(6), "pick"))
    alone = pick_neighbor(d[2:3], c[2:3], "softmax", keyed_generators(0, [2], "pick"))
    assert rows[2] == alone[0]
    z, n = torch.randn(6, 2, 4, 4), torch.randn(6, 2, 4, 4)
    mixed = interpolate(z, n, "mask", 0.5, keyed_generators(0, range(6), "mask"))
    single = interpolate(z[4:5], n[4:5], "mask", 0.5, keyed_generators(0, [4], "mask"))
    assert torch.equal(mixed[4:5], single)
    assert key_seed(0, "pick", 5) != key_seed(0, "mask", 5) != key_seed(1, "pick", 5)


# ------------------------------------------------------------------ two processes
def _rank(rank: int, world: int) -> dict:
    return {config: run(config, batch_sizes=(8,), rank=rank, world=world) for config in CONFIGS}


def test_two_processes_match_one_with_the_paper_preset_and_mask(tmp_path):
    single = {config: run(config, batch_sizes=(8,)) for config in CONFIGS}
    for rank, out in enumerate(run_ranks(_rank, 2, tmp_path)):
        for config in CONFIGS:
            assert out[config] == pytest.approx(single[config], rel=1e-6), (rank, config)


# ------------------------------------------------------------------ resumes
SIZE = 16


def _monitor(vae, **kwargs):
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(3 * SIZE * SIZE),
        bank_capacity=40,
        latent_source="encode",
        encode_fraction=0.5,
        sample_posterior=True,
        k=3,
        interpolation="mask",
    )
    settings.update(kwargs)
    return IFIDMonitor(vae, **settings)


def test_a_resumed_monitor_draws_what_an_uninterrupted_one_draws():
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    batches = [smooth_images(8, 3, SIZE, seed=20 + i) for i in range(6)]

    straight = _monitor(vae)
    for x in batches:
        straight.observe(images=x)
    expected = straight.evaluate()

    first = _monitor(vae)
    for x in batches[:3]:
        first.observe(images=x)
    state = first.state_dict()
    torch.manual_seed(123)  # the global RNG plays no part
    resumed = _monitor(vae)
    resumed.load_state_dict(state)
    for x in batches[3:]:
        resumed.observe(images=x)
    assert torch.equal(resumed.bank.state_dict()["vectors"], straight.bank.state_dict()["vectors"])
    got = resumed.evaluate()
    assert got["ifid"] == pytest.approx(expected["ifid"], rel=1e-9)
    assert got["rfid"] == pytest.approx(expected["rfid"], rel=1e-9)
    # And a second evaluation of the same weights repeats the first.
    assert straight.evaluate()["ifid"] == pytest.approx(expected["ifid"], rel=1e-12)


def test_streamed_reference_reencodes_the_latent_it_indexed():
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    reference = DataLoader(smooth_images(20, 3, SIZE, seed=30), batch_size=6)
    queries = DataLoader(smooth_images(12, 3, SIZE, seed=31), batch_size=6)
    kwargs = dict(
        feature=RandomFeatures(3 * SIZE * SIZE),
        sample_posterior=True,
        index="exact",
        progress=False,
    )
    streamed = evaluate_vae(vae, queries, reference, stream_reference=True, **kwargs)
    in_memory = evaluate_vae(vae, queries, reference, **kwargs)
    assert streamed["ifid"] == pytest.approx(in_memory["ifid"], rel=1e-6)
    metric = InterpolatedFID(
        vae=vae, feature=RandomFeatures(3 * SIZE * SIZE), sample_posterior=True
    )
    lookup = _reencoder(metric, reference, torch.device("cpu"))
    ids = torch.tensor([3, 17, 3])
    again = lookup(ids)
    assert torch.equal(lookup(ids), again) and torch.equal(again[0], again[2])
