"""Bad input gets a clear error and leaves the metric and the bank as they were."""

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8


@pytest.fixture
def setup():
    bank = LatentBank(capacity=16)
    bank.add(encode(smooth_images(16, seed=1)))
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    metric.update(smooth_images(8, seed=2))
    return metric, bank


def snapshot(metric, bank):
    states = {k: v.clone() for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)}
    return states, bank.state_dict()


def assert_unchanged(before, metric, bank):
    states, bank_state = before
    for k, v in states.items():
        assert torch.equal(v, metric.metric_state[k]), k
    after = bank.state_dict()
    assert torch.equal(bank_state["vectors"], after["vectors"]) and torch.equal(
        bank_state["ids"], after["ids"]
    )


def nan_images():
    x = smooth_images(4, seed=3)
    x[0, 0, 0, 0] = float("nan")
    return x


@pytest.mark.parametrize(
    "images,error,match",
    [
        (torch.rand(4, 8, 8) * 2 - 1, ValueError, r"\(B, C, H, W\)"),
        (torch.rand(4, 1, 8, 8) * 2 - 1, ValueError, "channels"),
        (nan_images(), ValueError, "NaN"),
        (smooth_images(4, seed=4) * 3, ValueError, "input_range"),
        ((smooth_images(4, seed=4) * 127 + 128).to(torch.uint8), TypeError, "floating point"),
        (torch.empty(0, 3, 8, 8), ValueError, "empty"),
        ([1, 2, 3], TypeError, "Tensor"),
    ],
)
def test_bad_images(setup, images, error, match):
    metric, bank = setup
    before = snapshot(metric, bank)
    with pytest.raises(error, match=match):
        metric.update(images)
    assert_unchanged(before, metric, bank)


def test_images_on_another_device(setup):
    metric, bank = setup
    before = snapshot(metric, bank)
    with pytest.raises(ValueError, match="metric.to"):
        metric.update(torch.zeros(2, 3, 8, 8, device="meta"))
    assert_unchanged(before, metric, bank)


def test_nan_latents_and_nan_decodes():
    bank = LatentBank(capacity=8)
    bank.add(encode(smooth_images(8, seed=5)))

    def bad_encode(x):
        z = encode(x)
        z[0] = float("nan")
        return z

    def bad_decode(z):
        return decode(z) * float("inf")

    m1 = InterpolatedFID(
        encoder=bad_encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    with pytest.raises(ValueError, match="encoder returned NaN"):
        m1.update(smooth_images(4, seed=6))
    m2 = InterpolatedFID(
        encoder=encode, decoder=bad_decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    with pytest.raises(ValueError, match="decoder returned NaN"):
        m2.update(smooth_images(4, seed=6))
    for m in (m1, m2):
        assert int(m.real_num_samples) == 0 and int(m.interp_num_samples) == 0


def test_empty_bank_too_small_bank_and_shape_mismatch():
    feature = RandomFeatures(IN_DIM)
    empty = InterpolatedFID(
        encoder=encode, decoder=decode, feature=feature, bank=LatentBank(capacity=4)
    )
    with pytest.raises(ValueError, match="bank is empty"):
        empty.update(smooth_images(2))
    small = LatentBank(capacity=4)
    small.add(encode(smooth_images(3)))
    topk = InterpolatedFID(encoder=encode, decoder=decode, feature=feature, bank=small, k=5)
    with pytest.raises(ValueError, match="k=5"):
        topk.update(smooth_images(2))
    other = LatentBank(capacity=4)
    other.add(torch.randn(4, 7))
    mismatch = InterpolatedFID(encoder=encode, decoder=decode, feature=feature, bank=other)
    with pytest.raises(ValueError, match="shape"):
        mismatch.update(smooth_images(2))
    for m in (empty, topk, mismatch):
        assert int(m.real_num_samples) == 0


def test_compute_needs_two_images():
    metric = InterpolatedFID(encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM))
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute()


def test_constructor_rejects_bad_settings():
    kw = {"encoder": encode, "decoder": decode, "feature": RandomFeatures(IN_DIM)}
    for bad, match in [
        ({"interpolation": "cubic"}, "interpolation"),
        ({"alpha": -0.1}, "alpha"),
        ({"k": 0}, "k must"),
        ({"pick": "max"}, "pick"),
        ({"distance": "l1"}, "distance"),
        ({"preset": "fast"}, "preset"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"bank": [1, 2]}, "LatentBank"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            InterpolatedFID(**kw, **bad)


def test_vae_it_cannot_drive():
    with pytest.raises(TypeError, match="encode"):
        InterpolatedFID(vae=object(), feature=RandomFeatures(IN_DIM))
    with pytest.raises(TypeError, match="encoder"):
        InterpolatedFID(encoder=encode, feature=RandomFeatures(IN_DIM))

    class Weird:
        def encode(self, x):
            return "not a tensor"

        def decode(self, z):
            return z

    metric = InterpolatedFID(vae=Weird(), feature=RandomFeatures(IN_DIM))
    with pytest.raises(TypeError, match="Cannot read latents"):
        metric.update(smooth_images(2))
