"""Careless-user mistakes: each gets an error that names the problem and the fix, leaves the metric
and the bank as they were, and a clean run afterwards gives what a run that never saw it gives.

Every ``match`` below holds two parts: the problem, then the fix the message proposes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.evaluate import _reencoder
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8
GOOD1, GOOD2 = smooth_images(10, seed=1), smooth_images(10, seed=2)
REFERENCE = encode(smooth_images(24, seed=3))


class Faulty:
    """A stand-in VAE and feature network that misbehave while ``fault`` names a fault."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.net = RandomFeatures(IN_DIM)

    def encode(self, x):
        z = encode(x)
        if self.fault == "nan_latents":
            z = z.clone()
            z[0, 0, 0, 0] = float("nan")
        elif self.fault == "latent_batch":
            z = z[:-1]
        elif self.fault == "latent_str":
            return "latents"
        return z

    def decode(self, z):
        x = decode(z)
        if self.fault == "nan_decode":
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        elif self.fault == "decode_channels":
            x = x[:, :1]
        elif self.fault == "decode_3d":
            x = x[0]
        elif self.fault == "decode_str":
            return "image"
        return x


class FaultyFeatures(nn.Module):
    num_features = 16

    def __init__(self, faulty: Faulty) -> None:
        super().__init__()
        self.faulty = faulty

    def forward(self, x):
        f = self.faulty.net(x)
        if self.faulty.fault == "feature_width":
            return f[:, :5]
        if self.faulty.fault == "feature_nan":
            return f * float("nan")
        return f


def build(k: int = 1, **kwargs) -> tuple[InterpolatedFID, LatentBank, Faulty]:
    faulty = Faulty()
    bank = LatentBank(capacity=32)
    bank.add(REFERENCE)
    metric = InterpolatedFID(
        encoder=faulty.encode,
        decoder=faulty.decode,
        feature=FaultyFeatures(faulty),
        bank=bank,
        k=k,
        **kwargs,
    )
    return metric, bank, faulty


def never_mistaken() -> dict[str, float]:
    metric, _, _ = build()
    metric.update(GOOD1)
    metric.update(GOOD2)
    return values(metric)


def values(metric: InterpolatedFID) -> dict[str, float]:
    return {key: float(value) for key, value in metric.compute().items()}


def snapshot(metric: InterpolatedFID, bank: LatentBank | None) -> dict:
    state = {}
    for key, value in metric.metric_state.items():
        state[key] = (
            [t.clone() for t in value] if isinstance(value, list) else value.detach().clone()
        )
    learned = (metric._channels, metric._queries_seen, metric._real_cached, metric.settings)
    return {
        "state": state,
        "learned": learned,
        "bank": bank.state_dict() if bank is not None else None,
    }


def assert_unchanged(before: dict, metric: InterpolatedFID, bank: LatentBank | None) -> None:
    after = snapshot(metric, bank)
    for key, value in before["state"].items():
        now = after["state"][key]
        if isinstance(value, list):
            assert len(value) == len(now) and all(torch.equal(a, b) for a, b in zip(value, now))
        else:
            assert torch.equal(value, now), key
    assert before["learned"] == after["learned"]
    if bank is not None:
        for key in ("vectors", "ids"):
            a, b = before["bank"][key], after["bank"][key]
            assert (a is None and b is None) or torch.equal(a, b), key


def _nan_image():
    x = GOOD2.clone()
    x[3, 1, 2, 2] = float("nan")
    return x


def _inf_image():
    x = GOOD2.clone()
    x[0, 0, 0, 0] = float("inf")
    return x


def _with_fault(fault):
    def call(metric, faulty):
        faulty.fault = fault
        try:
            metric.update(GOOD2)
        finally:
            faulty.fault = None

    return call


# name -> (the wrong call on a metric that already saw GOOD1, error type, problem.*fix)
UPDATE_MISTAKES = {
    "a list instead of a tensor": (
        lambda m, f: m.update(GOOD2.tolist()),
        TypeError,
        r"must be a torch.Tensor, got list.*torch.as_tensor",
    ),
    "a numpy array": (
        lambda m, f: m.update(GOOD2.numpy()),
        TypeError,
        r"must be a torch.Tensor, got ndarray.*torch.as_tensor",
    ),
    "one image without its batch dimension": (
        lambda m, f: m.update(GOOD2[0]),
        ValueError,
        r"shape \(B, C, H, W\), got \(3, 8, 8\).*unsqueeze\(0\)",
    ),
    "an empty batch": (
        lambda m, f: m.update(GOOD2[:0]),
        ValueError,
        r"empty batch.*skip empty batches",
    ),
    "uint8 images": (
        lambda m, f: m.update(((GOOD2 + 1) * 127.5).to(torch.uint8)),
        TypeError,
        r"floating point.*got torch.uint8.*images.float\(\) / 127.5 - 1",
    ),
    "channels-last images": (
        lambda m, f: m.update(GOOD2.permute(0, 2, 3, 1).contiguous()),
        ValueError,
        r"look channels-last.*permute\(0, 3, 1, 2\)",
    ),
    "grayscale images after RGB ones": (
        lambda m, f: m.update(GOOD2[:, :1]),
        ValueError,
        r"1 channels but earlier batches of this round had 3.*one channel count per round",
    ),
    "a NaN pixel": (
        lambda m, f: m.update(_nan_image()),
        ValueError,
        r"NaN or Inf \(1 of 10 images\).*fix or drop those images",
    ),
    "an Inf pixel": (
        lambda m, f: m.update(_inf_image()),
        ValueError,
        r"NaN or Inf.*fix or drop those images",
    ),
    "0..255 float images": (
        lambda m, f: m.update((GOOD2 + 1) * 127.5),
        ValueError,
        r"span \[.*\] but input_range is \(-1.0, 1.0\).*rescale them",
    ),
    "images on another device than the metric": (
        lambda m, f: m.update(torch.zeros(2, 3, 8, 8, device="meta")),
        ValueError,
        r"images are on meta but the metric is on cpu.*metric.to\('meta'\)",
    ),
    "images of another size than the bank's": (
        lambda m, f: m.update(smooth_images(4, size=16, seed=4)),
        ValueError,
        r"images of size 16x16 give latents of shape \(3, 8, 8\).*resize or crop them",
    ),
    "ids of the wrong length": (
        lambda m, f: m.update(GOOD2, ids=torch.arange(3)),
        ValueError,
        r"got 3 ids for 10 images; pass one per image",
    ),
    "float ids": (
        lambda m, f: m.update(GOOD2, ids=torch.arange(10.0)),
        TypeError,
        r"ids must be integers.*ids.long\(\)",
    ),
    "positions of the wrong length": (
        lambda m, f: m.update(GOOD2, positions=[0, 1]),
        ValueError,
        r"got 2 positions for 10 images; pass one per image",
    ),
    "an encoder returning NaN latents": (
        _with_fault("nan_latents"),
        ValueError,
        r"encoder returned NaN or Inf latents; check the VAE's weights",
    ),
    "an encoder returning fewer latents than images": (
        _with_fault("latent_batch"),
        ValueError,
        r"one latent per image.*for 10 images; return the latents.*batched like the images",
    ),
    "an encoder returning no tensor": (
        _with_fault("latent_str"),
        TypeError,
        r"Cannot read latents from the encoder output of type str.*encoder=",
    ),
    "a decoder returning NaN": (
        _with_fault("nan_decode"),
        ValueError,
        r"decoder returned NaN or Inf; check the VAE's weights",
    ),
    "a decoder returning another channel count": (
        _with_fault("decode_channels"),
        ValueError,
        r"decoder returns 1 channels but the images have 3; use a decoder",
    ),
    "a decoder returning an unbatched image": (
        _with_fault("decode_3d"),
        ValueError,
        r"one image per latent.*return the decoded images batched",
    ),
    "a decoder returning no tensor": (
        _with_fault("decode_str"),
        TypeError,
        r"decoder returned str; expected a tensor",
    ),
    "a feature network of another width than declared": (
        _with_fault("feature_width"),
        ValueError,
        r"must return \(B, 16\).*got \(10, 5\).*pass num_features=",
    ),
    "a feature network returning NaN": (
        _with_fault("feature_nan"),
        ValueError,
        r"feature network returned NaN or Inf; check its weights",
    ),
    "real statistics with keys missing": (
        lambda m, f: m.load_real_statistics({"real_features_sum": torch.zeros(16)}),
        ValueError,
        r"real statistics are missing.*pass the dict that real_statistics\(\) returns",
    ),
    "real statistics of another feature width": (
        lambda m, f: m.load_real_statistics(
            {
                "real_features_sum": torch.zeros(8),
                "real_features_cov_sum": torch.zeros(8, 8),
                "real_num_samples": torch.tensor(4),
            }
        ),
        ValueError,
        r"another dimension; load statistics computed with this metric's feature network",
    ),
}


@pytest.mark.parametrize("name", sorted(UPDATE_MISTAKES))
def test_update_mistake_is_named_and_harmless(name):
    call, error, match = UPDATE_MISTAKES[name]
    metric, bank, faulty = build()
    metric.update(GOOD1)
    before = snapshot(metric, bank)
    with pytest.raises(error, match=match):
        call(metric, faulty)
    assert_unchanged(before, metric, bank)
    metric.update(GOOD2)
    assert values(metric) == never_mistaken()


def test_a_run_through_every_mistake_ends_where_a_clean_run_ends():
    metric, bank, faulty = build()
    metric.update(GOOD1)
    for call, error, _ in UPDATE_MISTAKES.values():
        with pytest.raises(error):
            call(metric, faulty)
    metric.update(GOOD2)
    assert values(metric) == never_mistaken()


# ------------------------------------------------------------------ the reference set
def test_an_empty_bank():
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=LatentBank(8)
    )
    before = snapshot(metric, metric.bank)
    with pytest.raises(ValueError, match=r"bank is empty: add reference latents with bank.add"):
        metric.update(GOOD1)
    assert_unchanged(before, metric, metric.bank)


def test_k_larger_than_the_bank():
    bank = LatentBank(32)
    bank.add(REFERENCE[:4])
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank, k=6
    )
    before = snapshot(metric, bank)
    with pytest.raises(ValueError, match=r"k=6 .*only 4 .*lower k or add more latents"):
        metric.update(GOOD1)
    assert_unchanged(before, metric, bank)


def test_a_bank_filled_by_another_vae():
    bank = LatentBank(32)
    bank.add(torch.randn(8, 4, 4, 4))  # four latent channels: another VAE
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    before = snapshot(metric, bank)
    with pytest.raises(ValueError, match=r"bank holds latents of shape \(4, 4, 4\).*fill the bank"):
        metric.update(GOOD1)
    assert_unchanged(before, metric, bank)


def test_without_a_bank_k_as_large_as_the_query_set():
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=None, k=10
    )
    metric.update(GOOD1)  # 10 queries: each has only 9 others
    before = snapshot(metric, None)
    with pytest.raises(ValueError, match=r"k=10 .*only 9 .*lower k"):
        metric.compute()
    assert_unchanged(before, metric, None)
    metric.update(GOOD2)  # with more queries the same metric computes
    assert np.isfinite(values(metric)["ifid"])


def test_compute_before_enough_images():
    metric, bank, _ = build()
    with pytest.raises(ValueError, match=r"at least 2 query images, got 0; call update\(\)"):
        metric.compute()
    metric.update(GOOD1[:1])
    before = snapshot(metric, bank)
    with pytest.raises(ValueError, match=r"at least 2 query images, got 1; call update\(\)"):
        metric.compute()
    assert_unchanged(before, metric, bank)


def test_a_streamed_reference_from_a_shuffled_loader():
    metric, _, _ = build()
    loader = DataLoader(smooth_images(8, seed=5), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match=r"re-encodes neighbours by dataset index.*shuffle=False"):
        _reencoder(metric, loader, torch.device("cpu"))


# ------------------------------------------------------------------ the VAE
def test_a_vae_on_another_device_than_the_images():
    vae = TinyVAE(TinyVAEConfig(base_channels=8)).to("meta")
    metric = InterpolatedFID(vae=vae, feature=RandomFeatures(3 * 16 * 16), bank=None)
    before = snapshot(metric, None)
    with pytest.raises(ValueError, match=r"the VAE is on meta; move the VAE \(vae.to\('cpu'\)\)"):
        metric.update(smooth_images(4, size=16))
    assert_unchanged(before, metric, None)


def test_posterior_sampling_from_a_posterior_without_std():
    class MeanOnly:
        def __init__(self, mean):
            self.mean = mean

        def sample(self):
            return self.mean

    metric = InterpolatedFID(
        encoder=lambda x: MeanOnly(encode(x)),
        decoder=decode,
        feature=RandomFeatures(IN_DIM),
        bank=None,
        sample_posterior=True,
    )
    before = snapshot(metric, None)
    with pytest.raises(TypeError, match=r"needs a posterior with .mean and .std.*sample_posterior"):
        metric.update(GOOD1)
    assert_unchanged(before, metric, None)


def test_a_half_precision_vae_hidden_behind_a_function():
    torch.manual_seed(0)
    hidden = copy.deepcopy(TinyVAE(TinyVAEConfig(base_channels=8))).to(torch.bfloat16)
    metric = InterpolatedFID(
        encoder=lambda x: hidden.encode(x).mean,
        decoder=lambda z: hidden.decode(z),
        feature=RandomFeatures(3 * 16 * 16),
        bank=None,
    )
    before = snapshot(metric, None)
    with pytest.raises(TypeError, match=r"computes in another dtype.*Pass vae=<the nn.Module>"):
        metric.update(smooth_images(4, size=16))
    assert_unchanged(before, metric, None)


# ------------------------------------------------------------------ construction
FEATURE = RandomFeatures(IN_DIM)
CONSTRUCTION_MISTAKES = {
    "an unknown interpolation": (
        {"interpolation": "cubic"},
        ValueError,
        r"interpolation must be one of \('linear', 'slerp', 'mask', 'mask_top_half'\), got 'cubic'",
    ),
    "alpha outside [0, 1]": ({"alpha": 1.5}, ValueError, r"alpha must be a number in \[0, 1\]"),
    "k = 0": ({"k": 0}, ValueError, r"k must be a positive integer, got 0"),
    "a fractional k": ({"k": 2.5}, ValueError, r"k must be a positive integer, got 2.5"),
    "an unknown pick": (
        {"pick": "max"},
        ValueError,
        r"pick must be one of \('uniform', 'softmax_mse', 'softmax_distance'\)",
    ),
    "the ambiguous pick 'softmax'": (
        {"pick": "softmax", "k": 4},
        ValueError,
        r"'softmax' is ambiguous: use 'softmax_mse'.*or 'softmax_distance'",
    ),
    "an unknown distance": (
        {"distance": "l1"},
        ValueError,
        r"distance must be one of \('cosine', 'sqeuclidean'\), got 'l1'",
    ),
    "an unknown preset": ({"preset": "fast"}, ValueError, r"preset must be one of \['paper'\]"),
    "a preset contradicted by an argument": (
        {"preset": "paper", "k": 3},
        ValueError,
        r"preset='paper' sets k=10 but got k=3; drop those arguments",
    ),
    "a reversed input_range": (
        {"input_range": (1.0, -1.0)},
        ValueError,
        r"input_range must be \(low, high\) with low < high",
    ),
    "a tensor as the bank": (
        {"bank": REFERENCE},
        TypeError,
        r"bank must be a LatentBank or None, got Tensor.*LatentBank\(capacity=n\); bank.add",
    ),
    "an unknown index": (
        {"index": "bogus"},
        ValueError,
        r"index='bogus' is not known; use one of",
    ),
    "a string seed": ({"seed": "42"}, TypeError, r"seed must be an int, got '42'; e.g. seed=0"),
    "reset_real_features as a string": (
        {"reset_real_features": "no"},
        ValueError,
        r"reset_real_features must be True or False, got 'no'",
    ),
    "a negative range tolerance": (
        {"range_tolerance": -0.1},
        ValueError,
        r"range_tolerance must be >= 0",
    ),
    "an unknown feature name": (
        {"feature": "clip"},
        ValueError,
        r"Unknown feature 'clip': use 'inception'.*or pass an nn.Module",
    ),
    "a feature module of unknown width": (
        {"feature": nn.Sequential(nn.Flatten(), nn.LazyLinear(8), nn.Unflatten(1, (2, 4)))},
        ValueError,
        r"Cannot tell the feature dimension.*pass num_features=",
    ),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTION_MISTAKES))
def test_construction_mistake_is_named(name):
    kwargs, error, match = CONSTRUCTION_MISTAKES[name]
    kwargs = {"encoder": encode, "decoder": decode, "feature": FEATURE, **kwargs}
    bank = kwargs.get("bank") if isinstance(kwargs.get("bank"), LatentBank) else None
    with pytest.raises(error, match=match):
        InterpolatedFID(**kwargs)
    assert bank is None


def test_a_vae_it_cannot_drive():
    with pytest.raises(TypeError, match=r"vae=object has no callable encode / decode.*encoder="):
        InterpolatedFID(vae=object(), feature=FEATURE)
    with pytest.raises(TypeError, match=r"both encoder= and decoder= callables"):
        InterpolatedFID(encoder=encode, feature=FEATURE)
    with pytest.raises(TypeError, match=r"encoder and decoder must be callable"):
        InterpolatedFID(encoder="encode", decoder=decode, feature=FEATURE)


def test_the_module_covers_at_least_thirty_distinct_mistakes():
    others = [
        test_an_empty_bank,
        test_k_larger_than_the_bank,
        test_a_bank_filled_by_another_vae,
        test_without_a_bank_k_as_large_as_the_query_set,
        test_compute_before_enough_images,
        test_a_streamed_reference_from_a_shuffled_loader,
        test_a_vae_on_another_device_than_the_images,
        test_posterior_sampling_from_a_posterior_without_std,
        test_a_half_precision_vae_hidden_behind_a_function,
    ]
    vae_objects = 3  # test_a_vae_it_cannot_drive
    total = len(UPDATE_MISTAKES) + len(CONSTRUCTION_MISTAKES) + len(others) + vae_objects
    assert total >= 30
