"""What the metric keeps between calls: learned input properties, cached real statistics, query
latents, and the cached square root of the real covariance."""

import gc
import weakref

import numpy as np
import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.functional import frechet
from tests.helpers import RandomFeatures, decode, encode, scipy_fid, smooth_images

IN_DIM = 3 * 8 * 8


class ChannelAgnosticFeatures(torch.nn.Module):
    """Per-image statistics of any channel count: (B, C, H, W) -> (B, 6)."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        grid = torch.linspace(-1, 1, 4, dtype=x.dtype)
        return torch.cat(
            [flat.mean(1, keepdim=True), flat.std(1, keepdim=True), x.mean((1, 2))[:, :4] * grid], 1
        )


def make_bank(n=32, seed=2):
    bank = LatentBank(capacity=n)
    bank.add(encode(smooth_images(n, seed=seed)))
    return bank


def make_metric(**kwargs):
    kwargs.setdefault("feature", RandomFeatures(IN_DIM))
    return InterpolatedFID(encoder=encode, decoder=decode, **kwargs)


def values(metric):
    return {key: float(value) for key, value in metric.compute().items()}


# ------------------------------------------------------------------ nothing learned from a failure
def test_a_rejected_channels_last_batch_teaches_the_metric_nothing():
    bank = make_bank()
    images = smooth_images(16, seed=1)
    clean = make_metric(bank=bank)
    clean.update(images)
    metric = make_metric(bank=bank)
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        metric.update(images.permute(0, 2, 3, 1))  # (B, 8, 8, 3)
    metric.update(images)  # refused before: "images have 3 channels but earlier batches had 8"
    assert values(metric) == values(clean)


def test_a_batch_that_fails_inside_the_vae_teaches_nothing():
    bank = make_bank()
    metric = make_metric(bank=bank, feature=ChannelAgnosticFeatures())
    with pytest.raises(ValueError, match="shape"):
        metric.update(smooth_images(4, c=1, seed=3))  # 1-channel latents do not fit the bank
    metric.update(smooth_images(4, seed=3))
    assert int(metric.real_num_samples) == 4


def test_reset_forgets_the_channel_count():
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=ChannelAgnosticFeatures(), bank=None
    )
    metric.update(smooth_images(6, c=3, seed=4))
    metric.reset()
    metric.update(smooth_images(6, c=1, seed=4))  # a new round may use another channel count
    assert int(metric.real_num_samples) == 6
    with pytest.raises(ValueError, match="3 channels but earlier batches of this round had 1"):
        metric.update(smooth_images(6, c=3, seed=5))


# ------------------------------------------------------------------ reset_real_features=False
def test_compute_mid_round_does_not_cache_half_of_the_real_statistics():
    bank = make_bank(40, seed=6)
    first, second = smooth_images(20, seed=7), smooth_images(20, seed=8)
    everything = torch.cat([first, second])
    fresh = make_metric(bank=bank)
    fresh.update(everything)
    expected = values(fresh)

    metric = make_metric(bank=bank, reset_real_features=False)
    metric.update(first)
    metric.compute()  # mid-round look: must not freeze the real statistics at 20 images
    metric.update(second)
    assert (int(metric.real_num_samples), int(metric.interp_num_samples)) == (40, 40)
    assert values(metric) == pytest.approx(expected, rel=1e-12)
    # The next round reuses the whole round's real statistics and skips their pass.
    metric.reset()
    calls = metric.feature_net.calls
    metric.update(everything)
    assert metric.feature_net.calls == calls + 1
    assert int(metric.real_num_samples) == 40
    assert values(metric) == pytest.approx(expected, rel=1e-12)


def test_a_round_without_compute_is_not_cached():
    bank = make_bank(40, seed=6)
    metric = make_metric(bank=bank, reset_real_features=False)
    metric.update(smooth_images(10, seed=9))
    metric.reset()  # an abandoned round: nothing is kept
    assert int(metric.real_num_samples) == 0
    metric.update(smooth_images(20, seed=7))
    assert int(metric.real_num_samples) == 20


# ------------------------------------------------------------------ no query latents kept
def test_without_a_bank_no_latents_stay_referenced_after_compute_and_reset():
    metric = make_metric(bank=None)
    seen = []
    original = metric.refresh_index

    def spy(vectors=None, ids=None):
        if vectors is not None:
            seen.append(weakref.ref(vectors))
        return original(vectors, ids)

    metric.refresh_index = spy
    metric.update(smooth_images(12, seed=10))
    appended = weakref.ref(metric.query_latents[0])
    first = values(metric)
    gc.collect()
    assert seen and all(ref() is None for ref in seen), "the snapshot of the queries is still held"
    assert values(metric) == first  # a second compute of the same round still works
    metric.reset()
    gc.collect()
    assert appended() is None and all(ref() is None for ref in seen)


# ------------------------------------------------------------------ cached square root
def test_real_covariance_square_root_computed_once_and_exact(monkeypatch):
    calls = []
    original = frechet.psd_sqrt

    def counting(sigma):
        calls.append(sigma.shape)
        return original(sigma)

    monkeypatch.setattr(frechet, "psd_sqrt", counting)
    bank = make_bank(40, seed=11)
    queries = smooth_images(48, seed=12)
    metric = make_metric(bank=bank, reset_real_features=False)
    net = metric.feature_net
    metric.update(queries)
    first = values(metric)
    assert len(calls) == 1  # shared by iFID and rFID
    for _ in range(2):
        metric.reset()
        metric.update(queries)
        assert values(metric) == pytest.approx(first, rel=1e-12)
    assert len(calls) == 1  # the real statistics did not change: no new square root
    # Exact: rFID equals scipy's FID of the same features.
    real = net(queries).double().numpy()
    recon = net(decode(encode(queries)).clamp(-1, 1)).double().numpy()
    assert first["rfid"] == pytest.approx(scipy_fid(real, recon), rel=1e-6)
    # New real statistics (another query set after a full reset) give a new square root.
    fresh = make_metric(bank=bank)
    fresh.update(smooth_images(48, seed=13))
    values(fresh)
    assert len(calls) == 2


def test_frechet_distance_with_a_given_square_root_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 24)), rng.standard_normal((200, 24)) * 1.3 + 0.2
    mu1, s1 = (torch.from_numpy(v) for v in (a.mean(0), np.cov(a, rowvar=False)))
    mu2, s2 = (torch.from_numpy(v) for v in (b.mean(0), np.cov(b, rowvar=False)))
    root = frechet.psd_sqrt(s1)
    torch.testing.assert_close(root @ root, s1, rtol=1e-10, atol=1e-10)
    value = float(frechet.frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=root))
    assert value == pytest.approx(scipy_fid(a, b), rel=1e-8)
    with pytest.raises(ValueError, match="sqrt_sigma1"):
        frechet.frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=root[:3])
