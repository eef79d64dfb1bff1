"""KID from held features equals torchmetrics' KernelInceptionDistance on the same features."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.kid import KernelInceptionDistance

from ifid_callback.functional.kid import kernel_inception_distance, kernel_inception_distances


def _torchmetrics_kid(real, fake, seed, **kwargs):
    # The identity as "feature network": the metric sees exactly these features.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=nn.Identity(), **kwargs)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(seed)
    mean, std = metric.compute()
    return float(mean), float(std)


def _features(seed, n, m, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, d, generator=g, dtype=dtype)
    fake = torch.rand(m, d, generator=g, dtype=dtype) * 1.2 + 0.05
    return real, fake


@pytest.mark.parametrize(
    "n,m,d,kwargs",
    [
        (60, 50, 16, {"subsets": 7, "subset_size": 20}),
        (40, 40, 32, {"subsets": 5, "subset_size": 40}),
        (80, 70, 8, {"subsets": 4, "subset_size": 30, "degree": 2, "gamma": 0.5, "coef": 2.0}),
    ],
)
def test_equals_torchmetrics_kid_on_the_same_features(n, m, d, kwargs):
    real, fake = _features(d, n, m, d)
    ref_mean, ref_std = _torchmetrics_kid(real, fake, seed=123, **kwargs)
    ours = kernel_inception_distance(
        real, fake, generator=torch.Generator().manual_seed(123), **kwargs
    )
    assert float(ours.mean) == pytest.approx(ref_mean, rel=1e-12, abs=1e-15)
    assert float(ours.std) == pytest.approx(ref_std, rel=1e-10, abs=1e-15)
    assert ours.mean.dtype == torch.float64 and ours.mean.ndim == 0


def test_float32_features_agree_with_torchmetrics_to_float32_rounding():
    real, fake = _features(0, 50, 50, 64, dtype=torch.float32)
    ref_mean, _ = _torchmetrics_kid(real, fake, seed=7, subsets=6, subset_size=25)
    ours = kernel_inception_distance(real, fake, 6, 25, generator=torch.Generator().manual_seed(7))
    assert float(ours.mean) == pytest.approx(ref_mean, rel=1e-3)


def test_unbiased_mmd_by_hand_on_a_tiny_case():
    # d = 1, degree 1, gamma 1, coef 1: k(x, y) = x y + 1; with all rows in the subset the
    # unbiased MMD^2 is mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j).
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, 3.0, 5.0])

    def off_diag_mean(a):
        k = np.outer(a, a) + 1
        return (k.sum() - np.trace(k)) / (len(a) * (len(a) - 1))

    expected = off_diag_mean(x) + off_diag_mean(y) - 2 * (np.outer(x, y) + 1).mean()
    out = kernel_inception_distance(
        torch.tensor(x)[:, None], torch.tensor(y)[:, None], subsets=3, degree=1, gamma=1.0
    )
    assert float(out.mean) == pytest.approx(expected)
    assert float(out.std) == 0.0  # every subset holds all rows


def test_all_fake_sets_see_the_same_subsets_and_defaults_are_seeded():
    real, fake = _features(1, 30, 30, 8)
    other = fake.flip(0) + 0.1
    both = kernel_inception_distances(
        real,
        {"ikid": fake, "rkid": other},
        subsets=5,
        subset_size=10,
        generator=torch.Generator().manual_seed(3),
    )
    for name, f in (("ikid", fake), ("rkid", other)):
        alone = kernel_inception_distance(
            real, f, 5, 10, generator=torch.Generator().manual_seed(3)
        )
        assert torch.equal(both[name].mean, alone.mean) and torch.equal(both[name].std, alone.std)
    # Sets of different sizes draw different permutations; still each as if alone.
    mixed = kernel_inception_distances(
        real, {"a": fake, "b": other[:25]}, 4, 10, generator=torch.Generator().manual_seed(9)
    )
    for name, f in (("a", fake), ("b", other[:25])):
        alone = kernel_inception_distance(
            real, f, 4, 10, generator=torch.Generator().manual_seed(9)
        )
        assert torch.equal(mixed[name].mean, alone.mean)
    # Default subset size: all 30 rows (fewer than 1000); default generator: fixed seed.
    a = kernel_inception_distance(real, fake, subsets=2)
    assert torch.equal(a.mean, kernel_inception_distance(real, fake, subsets=2).mean)
    assert float(a.std) == pytest.approx(0.0, abs=1e-15)


def test_rejects_bad_input():
    real, fake = _features(2, 20, 15, 4)
    with pytest.raises(ValueError, match=r"subset_size=16 must lie in \[2, 15\]"):
        kernel_inception_distance(real, fake, subset_size=16)
    with pytest.raises(ValueError, match="features per row"):
        kernel_inception_distance(real, fake[:, :3])
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernel_inception_distance(real, fake * float("inf"))
    with pytest.raises(ValueError, match="subsets"):
        kernel_inception_distance(real, fake, subsets=0)
    with pytest.raises(ValueError, match="gamma"):
        kernel_inception_distance(real, fake, gamma=-1.0)
    with pytest.raises(ValueError, match="non-empty mapping"):
        kernel_inception_distances(real, {})
