"""Copies of a metric with a built index are independent of their source.

``clone()``, ``copy.deepcopy``, ``pickle`` and ``torch.save``/``torch.load`` of a metric give a
metric that computes exactly what a fresh metric over the copy's own bank computes, before and
after the source's bank changes; the source is not affected by the copy either.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.index import NeighborIndex
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images

IN_DIM = 3 * 8 * 8
CAPACITY = 48


def _copy_by(how: str, metric: InterpolatedFID) -> InterpolatedFID:
    if how == "clone":
        return metric.clone()
    if how == "deepcopy":
        return copy.deepcopy(metric)
    if how == "pickle":
        return pickle.loads(pickle.dumps(metric))
    buffer = io.BytesIO()
    torch.save(metric, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _bank(seed: int) -> LatentBank:
    bank = LatentBank(capacity=CAPACITY)
    bank.add(encode(smooth_images(CAPACITY, seed=seed)))
    return bank


# (name, metric options): every kind of index and row ownership.
SETUPS = {
    "exact-live": dict(index="exact"),
    "exact-frozen": dict(index="exact", auto_refresh_index=False),
    "ivf-live": dict(index="IVF4,Flat"),
    "ivf-frozen": dict(index="IVF4,Flat", auto_refresh_index=False),
    "hnsw": dict(index="hnsw"),
    "bn_channel": dict(index="exact", search_norm="bn_channel", k=3, pick="softmax_mse"),
}


def _metric(bank: LatentBank | None, **options) -> InterpolatedFID:
    return InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank, **options
    )


def _values(metric: InterpolatedFID) -> dict[str, float]:
    return {key: float(value) for key, value in metric.compute().items()}


def _fresh_over(bank: LatentBank, options: dict, rounds: list[torch.Tensor]) -> dict[str, float]:
    """What a new metric over a restored copy of ``bank`` computes for these batches."""
    own = LatentBank(capacity=bank.capacity)
    own.load_state_dict(bank.state_dict())
    metric = _metric(own, **options)
    if not metric.auto_refresh_index:
        metric.refresh_index()
    for images in rounds:
        metric.update(images)
    return _values(metric)


@pytest.mark.parametrize("how", ["clone", "deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_a_copy_searches_and_interpolates_with_its_own_rows(setup, how):
    options = SETUPS[setup]
    first, second = smooth_images(12, seed=1), smooth_images(12, seed=2)
    source = _metric(_bank(seed=3), **options)
    if not source.auto_refresh_index:
        source.refresh_index()
    source.update(first)  # the index is built and used
    twin = _copy_by(how, source)
    assert _values(twin) == _values(source)
    expected = _fresh_over(twin.bank, options, [first, second])
    # The source's bank is overwritten (a full ring buffer): the copy must not notice.
    source.bank.add(-encode(smooth_images(CAPACITY, seed=4)))
    source.update(second)
    twin.update(second)
    assert _values(twin) == expected
    # Nor does the copy's bank change what the source computes.
    moved = _fresh_over(source.bank, options, [second]) if source.auto_refresh_index else None
    twin.bank.add(-encode(smooth_images(CAPACITY, seed=5)))
    twin.update(second)
    if moved is not None:
        source.reset()
        source.update(second)
        assert _values(source) == moved


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_frozen_index_keeps_the_copy_s_own_overwritten_rows(how):
    """Without auto refresh, an index answers for its bank's rows at the refresh; the rows the
    copy's bank overwrites later must be kept for the copy's index, not only the source's."""
    options = dict(index="IVF4,Flat", auto_refresh_index=False)
    source = _metric(_bank(seed=3), **options)
    source.refresh_index()
    twin = _copy_by(how, source)
    images = smooth_images(12, seed=1)
    before = _metric(_bank(seed=3), **options)
    before.refresh_index()
    before.update(images)
    twin.bank.add(-encode(smooth_images(CAPACITY, seed=6)))  # overwrites every row
    twin.update(images)
    assert _values(twin) == _values(before)


class _Lookup:
    """A picklable lookup of reference latents by id."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.latents[ids]


@pytest.mark.parametrize("how", ["clone", "deepcopy", "pickle", "torch.save"])
def test_a_copy_of_a_streamed_reference_uses_its_own_lookup(how):
    latents = encode(smooth_images(40, seed=7))
    index = NeighborIndex("exact", distance="cosine").build(latents.reshape(40, -1))
    lookup = _Lookup(latents.clone())
    source = _metric(None)
    source.set_reference(index, lookup)
    images = smooth_images(12, seed=1)
    fresh = _metric(None)
    fresh.set_reference(copy.deepcopy(index), _Lookup(latents.clone()))
    fresh.update(images)
    twin = _copy_by(how, source)
    lookup.latents.mul_(4.0)  # the source's reference rows change
    twin.update(images)
    assert _values(twin) == _values(fresh)


def _ranks_copy(rank: int, world: int) -> dict:
    """Each rank holds half of one bank; the copy of the metric must use its own gathered rows."""
    bank = LatentBank(capacity=CAPACITY // 2)
    bank.add(encode(smooth_images(CAPACITY, seed=3))[rank::world])
    source = _metric(bank, index="exact")
    images = smooth_images(12, seed=1)[rank::world]
    source.update(images)
    twin = copy.deepcopy(source)
    pickled = pickle.loads(pickle.dumps(source))
    source.bank.add(-encode(smooth_images(CAPACITY, seed=4))[rank::world])
    out = {}
    for name, metric in (("deepcopy", twin), ("pickle", pickled)):
        metric.update(images)
        out[name] = _values(metric)
    fresh = _metric(LatentBank(capacity=CAPACITY // 2), index="exact")
    fresh.bank.add(encode(smooth_images(CAPACITY, seed=3))[rank::world])
    fresh.update(images)
    fresh.update(images)
    out["fresh"] = _values(fresh)
    return out


def test_copies_under_ddp_use_their_own_gathered_rows(tmp_path):
    for out in run_ranks(_ranks_copy, 2, tmp_path):
        assert out["deepcopy"] == out["fresh"]
        assert out["pickle"] == out["fresh"]
