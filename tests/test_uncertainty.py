"""Sampling uncertainty of FID: sample-space Fréchet distance, jackknife, min_delta advice."""

import math

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch

from ifid_callback.functional.frechet import frechet_distance, statistics_of
from ifid_callback.functional.uncertainty import (
    _influence_terms,
    frechet_influence,
    frechet_jackknife,
    jackknife_groups,
    recommend_min_delta,
    sample_space_frechet_distance,
)


def _scipy_fd(x: torch.Tensor, y: torch.Tensor) -> float:
    a, b = x.numpy(), y.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _mp_fd(x: torch.Tensor, y: torch.Tensor, digits: int = 50) -> float:
    """The Fréchet distance in 50-digit arithmetic: sum of square roots of the eigenvalues of
    S1^1/2 S2 S1^1/2, where zero eigenvalues come out at 1e-50 instead of 1e-16."""
    with mpmath.workdps(digits):

        def cov(a):
            m = mpmath.matrix(a.tolist())
            n, d = m.rows, m.cols
            mu = [mpmath.fsum(m[i, j] for i in range(n)) / n for j in range(d)]
            c = mpmath.matrix(d, d)
            for j in range(d):
                for k in range(j, d):
                    c[j, k] = c[k, j] = mpmath.fsum(
                        (m[i, j] - mu[j]) * (m[i, k] - mu[k]) for i in range(n)
                    ) / (n - 1)
            return mu, c

        mu1, s1 = cov(x)
        mu2, s2 = cov(y)
        w, v = mpmath.eigsy(s1)
        root = v * mpmath.diag([mpmath.sqrt(max(e, 0)) for e in w]) * v.T
        mid = root * s2 * root
        ev = mpmath.eigsy((mid + mid.T) / 2, eigvals_only=True)
        tr_covmean = mpmath.fsum(mpmath.sqrt(max(e, 0)) for e in ev)
        d = len(mu1)
        value = (
            mpmath.fsum((mu1[j] - mu2[j]) ** 2 for j in range(d))
            + mpmath.fsum(s1[j, j] for j in range(d))
            + mpmath.fsum(s2[j, j] for j in range(d))
            - 2 * tr_covmean
        )
        return float(value)


def _sets(seed: int, n: int, m: int, d: int, rank: int | None = None):
    g = torch.Generator().manual_seed(seed)
    kw = {"generator": g, "dtype": torch.float64}
    if rank is None:
        x = torch.randn(n, d, **kw) @ torch.randn(d, d, **kw) + 1.0
        y = torch.randn(m, d, **kw) * 1.3 + 0.5
    else:
        x = torch.randn(n, rank, **kw) @ torch.randn(rank, d, **kw) + 2.0
        y = torch.randn(m, rank, **kw) @ torch.randn(rank, d, **kw) + 2.2
    return x, y


@pytest.mark.parametrize("n,m,d", [(200, 200, 64), (300, 250, 32), (90, 120, 16)])
def test_sample_space_equals_frechet_distance_and_scipy_on_full_rank_sets(n, m, d):
    x, y = _sets(d, n, m, d)
    fast = float(sample_space_frechet_distance(x, y))
    ours = float(frechet_distance(*statistics_of(x), *statistics_of(y)))
    assert fast == pytest.approx(ours, rel=1e-8)
    assert fast == pytest.approx(_scipy_fd(x, y), rel=1e-8)


@pytest.mark.parametrize(
    "n,m,d,rank",
    [(12, 15, 20, None), (30, 30, 40, 5), (25, 18, 24, 3)],
    ids=["fewer-rows-than-features", "rank-5", "rank-3-unequal-sizes"],
)
def test_sample_space_is_exact_on_rank_deficient_sets(n, m, d, rank):
    # Rank-deficient covariances: S1^1/2 S2 S1^1/2 has zero eigenvalues, whose float64 rounding
    # (about 1e-16 of the largest) becomes 1e-8 after the square root. The singular values of the
    # centred cross product do not go through that square root, so the sample-space distance
    # matches a 50-digit evaluation to 1e-10 while d-space float64 is only good to ~1e-7.
    x, y = _sets(n + d, n, m, d, rank)
    reference = _mp_fd(x, y)
    fast = float(sample_space_frechet_distance(x, y))
    assert fast == pytest.approx(reference, rel=1e-10)
    assert float(frechet_distance(*statistics_of(x), *statistics_of(y))) == pytest.approx(
        reference, rel=1e-6
    )


def test_sample_space_is_invariant_to_a_common_shift_and_zero_on_identical_sets():
    x, y = _sets(3, 40, 50, 30)
    shift = torch.full((30,), 1e3, dtype=torch.float64)
    a = float(sample_space_frechet_distance(x, y))
    assert float(sample_space_frechet_distance(x + shift, y + shift)) == pytest.approx(a, rel=1e-8)
    same = sample_space_frechet_distance(x, x.clone())
    assert same.dtype == torch.float64 and 0.0 <= float(same) < 1e-8


def _brute_force_jackknife(real, fake, labels, groups, distance):
    full = float(distance(real, fake))
    reps = torch.tensor(
        [float(distance(real[labels != g], fake[labels != g])) for g in range(groups)],
        dtype=torch.float64,
    )
    se = math.sqrt((groups - 1) / groups * float(((reps - reps.mean()) ** 2).sum()))
    return full, se


def _feature_space_fd(x, y):
    return frechet_distance(*statistics_of(x), *statistics_of(y))


@pytest.mark.parametrize(
    "space,n,d,distance",
    [
        # N <= d (where "auto" takes the sample space): d-space float64 is only good to ~1e-7
        # there, so the reference is the exact sample-space distance (checked against 50-digit
        # arithmetic above) on hand-deleted rows; the replicates use the faster spectrum.
        ("sample", 40, 48, sample_space_frechet_distance),
        ("feature", 120, 24, _feature_space_fd),
    ],
)
def test_jackknife_equals_direct_deletion_of_paired_rows(space, n, d, distance):
    # Each replicate must drop the same queries from the real and every fake set; the reference
    # deletes them by hand and recomputes each FID from scratch.
    groups = 8
    g = torch.Generator().manual_seed(5)
    real = torch.randn(n, d, generator=g, dtype=torch.float64)
    recon = 0.9 * real + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    interp = 0.5 * real + torch.randn(n, d, generator=g, dtype=torch.float64) + 0.2
    out = frechet_jackknife(
        real,
        {"ifid": interp, "rfid": recon},
        groups=groups,
        generator=torch.Generator().manual_seed(11),
        space=space,
    )
    labels = jackknife_groups(n, groups, torch.Generator().manual_seed(11))
    for name, fake in (("ifid", interp), ("rfid", recon)):
        full, se = _brute_force_jackknife(real, fake, labels, groups, distance)
        assert float(out[name].value) == pytest.approx(full, rel=1e-9)
        assert float(out[name].std_error) == pytest.approx(se, rel=1e-7)
        assert out[name].value.dtype == torch.float64 and out[name].value.ndim == 0


def test_sample_and_feature_space_agree_where_both_are_accurate():
    # The two routes to the same replicates (Gram blocks vs downdated d-space sums) agree, to
    # the ~1e-7 that d-space float64 manages at N < d.
    g = torch.Generator().manual_seed(8)
    real = torch.randn(30, 40, generator=g, dtype=torch.float64)
    fake = 0.8 * real + 0.5 * torch.randn(30, 40, generator=g, dtype=torch.float64) + 0.1
    a = frechet_jackknife(real, {"x": fake}, groups=6, space="sample")["x"]
    b = frechet_jackknife(real, {"x": fake}, groups=6, space="feature")["x"]
    assert float(a.value) == pytest.approx(float(b.value), rel=1e-6)
    assert float(a.std_error) == pytest.approx(float(b.std_error), rel=1e-4)


def test_jackknife_groups_are_balanced_and_seeded():
    labels = jackknife_groups(103, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() == 10 and counts.max() == 11 and counts.sum() == 103
    again = jackknife_groups(103, 10, torch.Generator().manual_seed(0))
    assert torch.equal(labels, again)
    assert torch.equal(jackknife_groups(103, 10), jackknife_groups(103, 10))
    assert not torch.equal(labels, jackknife_groups(103, 10, torch.Generator().manual_seed(1)))


def _calibration(shift: float, replicates: int, seed: int, method: str = "jackknife", d: int = 32):
    n = 200
    g = torch.Generator().manual_seed(seed)
    scale = 1 + shift * torch.linspace(-0.5, 0.5, d, dtype=torch.float64)
    offset = torch.full((d,), 0.3 * shift, dtype=torch.float64)
    values, errors = [], []
    for r in range(replicates):
        real = torch.randn(n, d, generator=g, dtype=torch.float64)
        # A paired set (each fake row depends on its real row) and an unpaired one.
        paired = real * scale * 0.6 + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
        unpaired = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
        fakes = {"paired": paired + offset, "unpaired": unpaired + offset}
        if method == "jackknife":
            out = frechet_jackknife(
                real, fakes, groups=20, generator=torch.Generator().manual_seed(r)
            )
        else:
            out = frechet_influence(real, fakes)
        values.append([float(out[k].value) for k in ("paired", "unpaired")])
        errors.append([float(out[k].std_error) for k in ("paired", "unpaired")])
    values, errors = torch.tensor(values), torch.tensor(errors)
    return errors.mean(0) / values.std(0)


def test_jackknife_standard_error_is_calibrated_against_independent_draws(one_thread):
    """Mean jackknife SE over 200 independent draws vs the empirical std of FID over those draws.

    Gaussian case, d = 32, N = 200, G = 20; real ~ N(0, I); a paired fake set (0.6 s * real + 0.8
    noise + 0.3) and an unpaired one (N(0.3, diag(s^2)), s from 0.5 to 1.5). Measured (300
    draws): FID 5.1 and 8.6, empirical std 0.27 and 0.46, mean SE / std = 1.04 and 1.09.
    Tolerance: the ratio must lie in [0.8, 1.25] (the empirical std of 200 draws alone is
    uncertain by about 5%).
    """
    ratio = _calibration(shift=1.0, replicates=200, seed=1)
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_jackknife_errs_on_the_large_side_when_the_sets_match(one_thread):
    """Same sets as the calibration test but with fake ~ real's distribution (FID at its
    small-N bias floor, 1.8 and 3.0): the jackknife overestimates the spread, by 1.46-1.50x
    measured over 150 draws; it must stay conservative (ratio in (1.0, 2.0))."""
    ratio = _calibration(shift=0.0, replicates=100, seed=2)
    assert ((ratio > 1.0) & (ratio < 2.0)).all(), ratio


def test_influence_standard_error_is_calibrated_against_independent_draws(one_thread):
    """As the jackknife calibration test, with the infinitesimal jackknife (same sets, d = 32,
    N = 200, 200 draws). Measured over 1000 draws: mean SE / empirical std = 1.14 (paired) and
    1.07 (unpaired); the SE's own relative spread 6-7% (the G = 20 jackknife's: 16-17%).
    Tolerance: the ratio must lie in [0.8, 1.25]."""
    ratio = _calibration(shift=1.0, replicates=200, seed=1, method="influence")
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_influence_standard_error_is_calibrated_with_fewer_rows_than_features(one_thread):
    """The training-time regime, N = 200 < d = 256 (FID 133 and 203): measured over 1000 draws,
    mean SE / empirical std = 1.09 (paired) and 1.22 (unpaired): conservative, as at the bias
    floor. Tolerance for 200 draws: [0.8, 1.4]."""
    ratio = _calibration(shift=1.0, replicates=200, seed=3, method="influence", d=256)
    assert ((ratio > 0.8) & (ratio < 1.4)).all(), ratio


@pytest.mark.parametrize("n,d", [(60, 8), (30, 40)], ids=["N>d", "N<d"])
def test_influence_equals_finite_differences_of_weighted_fid(n, d):
    # IF_i = d/de FID((1 - e) F_n + e delta_i): move weight onto query i's pair (x_i, y_i) and
    # difference an independently written weighted FID (population weights, exact singular
    # values of the weighted centred cross product).
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.7 * x + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3

    def weighted_fid(w):
        mx, my = w @ x, w @ y
        a, b = (x - mx) * w.sqrt()[:, None], (y - my) * w.sqrt()[:, None]
        nuclear = torch.linalg.svdvals(a @ b.T).sum()
        return float((mx - my).dot(mx - my) + (a * a).sum() + (b * b).sum() - 2 * nuclear)

    value, influence = _influence_terms(x, y)
    u, eps = torch.full((n,), 1 / n, dtype=torch.float64), 1e-5
    numeric = []
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        up, down = (1 - eps) * u + eps * e, (1 + eps) * u - eps * e
        numeric.append((weighted_fid(up) - weighted_fid(down)) / (2 * eps))
    numeric = torch.tensor(numeric)
    assert float((numeric - influence).abs().max()) < 1e-5 * float(influence.abs().max())
    assert abs(float(influence.sum())) < 1e-9 * float(influence.abs().sum())
    # The value is the usual (unbiased-covariance) FID.
    assert float(value) == pytest.approx(float(sample_space_frechet_distance(x, y)), rel=1e-6)
    out = frechet_influence(x, {"y": y})["y"]
    assert float(out.std_error) == pytest.approx(float(influence.pow(2).sum().sqrt()) / n)


def test_influence_value_is_exact_at_n_up_to_d():
    x, y = _sets(4, 40, 40, 64)
    out = frechet_influence(x, {"a": y, "b": x * 0.5})
    assert float(out["a"].value) == pytest.approx(_mp_fd(x, y), rel=1e-9)
    assert out["a"].value.dtype == torch.float64 and out["a"].std_error.ndim == 0
    assert out["a"].value.device.type == "cpu"


def test_jackknife_rejects_bad_input():
    real = torch.randn(40, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows but real has 40"):
        frechet_jackknife(real, {"ifid": real[:30]})
    with pytest.raises(ValueError, match="8"):
        frechet_jackknife(real, {"ifid": torch.randn(40, 9)})
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = real.clone()
        bad[3, 2] = float("nan")
        frechet_jackknife(real, {"ifid": bad})
    with pytest.raises(ValueError, match="groups=1"):
        frechet_jackknife(real, {"ifid": real + 1}, groups=1)
    with pytest.raises(ValueError, match="groups=41"):
        frechet_jackknife(real, {"ifid": real + 1}, groups=41)
    with pytest.raises(ValueError, match="non-empty mapping"):
        frechet_jackknife(real, {})
    with pytest.raises(ValueError, match="space="):
        frechet_jackknife(real, {"ifid": real + 1}, space="gram")
    with pytest.raises(ValueError, match="rows but real has 40"):
        frechet_influence(real, {"ifid": real[:30]})
    with pytest.raises(ValueError, match="at least 3"):
        frechet_influence(real[:2], {"ifid": real[:2]})


def test_delete_one_jackknife_is_allowed():
    real = torch.randn(12, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = frechet_jackknife(real, {"x": real * 2 + 1}, groups=12)
    assert math.isfinite(float(out["x"].std_error)) and float(out["x"].std_error) > 0


def test_recommend_min_delta_is_two_standard_errors_of_a_difference():
    evals = [(30.0, 1.0), (28.0, 3.0), (27.5, 2.0)]
    assert recommend_min_delta(evals) == pytest.approx(2 * math.sqrt(2) * 2.0)
    # Even count: the median is the midpoint.
    assert recommend_min_delta([(1.0, 1.0), (1.0, 3.0)], z=1.0) == pytest.approx(math.sqrt(2) * 2.0)
    fid = frechet_jackknife(torch.randn(30, 4), {"x": torch.randn(30, 4) + 1}, groups=5)["x"]
    assert recommend_min_delta([fid]) == pytest.approx(2 * math.sqrt(2) * float(fid.std_error))
    with pytest.raises(ValueError, match="at least one"):
        recommend_min_delta([])
    with pytest.raises(ValueError, match="finite"):
        recommend_min_delta([(1.0, float("nan"))])
    with pytest.raises(ValueError, match=">= 0"):
        recommend_min_delta([(1.0, -0.5)])
    with pytest.raises(ValueError, match="z must"):
        recommend_min_delta([(1.0, 0.5)], z=0)
