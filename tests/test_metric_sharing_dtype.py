"""Sharing a network through torchmetrics' FeatureShare, and dtype changes of the metric.

Inside ``FeatureShare`` a batch tensor refilled in place gets its own features (not the cached
features of the first batch it held); a network that takes another input range is refused.
``.to(dtype)``, ``.half()``, ``.double()`` and ``set_dtype`` leave the float64 sums and the
networks' precision alone: the result is unchanged.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.wrappers import FeatureShare

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.feature_share import TorchmetricsFeatures
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8


def _bank() -> LatentBank:
    bank = LatentBank(capacity=64)
    bank.add(encode(smooth_images(40, seed=1)))
    return bank


def _values(metric) -> dict[str, float]:
    return {key: float(value) for key, value in metric.compute().items()}


def test_a_buffer_refilled_in_place_gets_its_own_features():
    batches = [smooth_images(12, seed=s) for s in (3, 4, 5)]
    net = RandomFeatures(IN_DIM)
    shared = FeatureShare(
        {
            "k1": InterpolatedFID(encode, decode, feature=net, bank=_bank()),
            "k3": InterpolatedFID(encode, decode, feature=net, bank=_bank(), k=3),
        }
    )
    buffer = torch.empty_like(batches[0])
    for images in batches:
        buffer.copy_(images)  # a prefetcher's (or pinned) buffer: one tensor, new pixels
        shared.update(buffer)
    got = {name: _values(metric) for name, metric in shared.items()}
    for name, k in (("k1", 1), ("k3", 3)):
        alone = InterpolatedFID(encode, decode, feature=RandomFeatures(IN_DIM), bank=_bank(), k=k)
        for images in batches:
            alone.update(images)
        assert got[name] == _values(alone)


def test_the_same_batch_is_featurized_once_for_the_whole_collection():
    net = RandomFeatures(IN_DIM)
    shared = FeatureShare(
        {
            "a": InterpolatedFID(encode, decode, feature=net, bank=_bank(), compute_rfid=False),
            "b": InterpolatedFID(
                encode, decode, feature=net, bank=_bank(), alpha=0.3, compute_rfid=False
            ),
        }
    )
    calls = net.calls
    shared.update(smooth_images(8, seed=3))
    # Real images once for both, and each metric's interpolants once.
    assert net.calls - calls == 3


class _UnitRangeNet(nn.Module):
    """A feature network for images in [0, 1] (what torchmetrics' FID feeds a custom network)."""

    input_range = (0.0, 1.0)
    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.inner = RandomFeatures(IN_DIM, 8)

    def forward(self, x):
        return self.inner(x)


def test_fid_s_network_in_one_feature_share_is_refused_naming_both_ranges():
    fid = FrechetInceptionDistance(feature=TorchmetricsFeatures(_UnitRangeNet()), normalize=True)
    metric = InterpolatedFID(encode, decode, feature=RandomFeatures(IN_DIM, 8), bank=_bank())
    with pytest.raises(ValueError, match=r"\(0\.0, 1\.0\).*input_range=\(-1\.0, 1\.0\)"):
        FeatureShare({"fid": fid, "ifid": metric})


def test_a_network_of_another_input_range_is_refused():
    first = InterpolatedFID(
        encode, decode, feature=_UnitRangeNet(), bank=_bank(), input_range=(0.0, 1.0)
    )
    second = InterpolatedFID(encode, decode, feature=RandomFeatures(IN_DIM, 8), bank=_bank())
    with pytest.raises(ValueError, match=r"\(0\.0, 1\.0\).*input_range=\(-1\.0, 1\.0\)"):
        FeatureShare({"a": first, "b": second})


def _updated(**options) -> InterpolatedFID:
    metric = InterpolatedFID(
        encode, decode, feature=RandomFeatures(IN_DIM), bank=_bank(), kid=True, **options
    )
    metric.update(smooth_images(16, seed=7))
    return metric


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m.to(torch.float16),
        lambda m: m.half(),
        lambda m: m.double(),
        lambda m: m.to(torch.bfloat16),
        lambda m: m.set_dtype(torch.float16),
        lambda m: m.set_dtype(torch.float64),
    ],
    ids=["to-fp16", "half", "double", "to-bf16", "set_dtype-fp16", "set_dtype-fp64"],
)
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_dtype_change_leaves_the_sums_and_the_result_alone(convert, when):
    expected = _updated()
    expected.update(smooth_images(16, seed=8))
    want = _values(expected)
    metric = InterpolatedFID(encode, decode, feature=RandomFeatures(IN_DIM), bank=_bank(), kid=True)
    if when == "before":
        convert(metric)
    metric.update(smooth_images(16, seed=7))
    if when == "after":
        convert(metric)
    assert metric.real_features_sum.dtype == torch.float64
    assert metric.interp_features_cov_sum.dtype == torch.float64
    assert next(metric.feature_net.buffers()).dtype == torch.float32  # its own precision
    metric.update(smooth_images(16, seed=8))
    assert _values(metric) == want
