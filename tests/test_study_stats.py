"""The statistics that compare two predictors of gFID: Williams' test, partial correlation, the
paired bootstrap of a correlation difference, and the probe-seed level of the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from ifid_callback.probes.stats import (
    bootstrap_correlation,
    bootstrap_partial_correlation,
    paired_bootstrap_difference,
    partial_correlation,
    seed_bootstrap_correlation,
    williams_test,
)


def test_williams_test_matches_the_published_worked_example():
    # Howell, Statistical Methods for Psychology (6th ed., p. 262): r12 = .80, r13 = .72,
    # r23 = .89, n = 26 gives t = 1.361 on 23 df, two-sided p = .187.
    res = williams_test(0.80, 0.72, 0.89, 26)
    assert res.df == 23
    assert res.t == pytest.approx(1.361, abs=5e-4)
    assert res.p_value == pytest.approx(0.187, abs=5e-4)


def test_williams_test_hand_computed_and_antisymmetric():
    r12, r13, r23, n = 0.9, 0.5, 0.4, 10
    det = 1 - r12**2 - r13**2 - r23**2 + 2 * r12 * r13 * r23
    t = (r12 - r13) * math.sqrt(
        (n - 1)
        * (1 + r23)
        / (2 * (n - 1) / (n - 3) * det + ((r12 + r13) / 2) ** 2 * (1 - r23) ** 3)
    )
    res = williams_test(r12, r13, r23, n)
    assert res.t == pytest.approx(t, rel=1e-12)
    assert res.p_value == pytest.approx(2 * scipy.stats.t.sf(t, n - 3), rel=1e-12)
    assert williams_test(r13, r12, r23, n).t == pytest.approx(-t, rel=1e-12)
    assert williams_test(0.5, 0.5, 0.3, 10).t == 0.0
    with pytest.raises(ValueError, match="n must be"):
        williams_test(0.5, 0.4, 0.3, 3)
    with pytest.raises(ValueError, match="r23"):
        williams_test(0.5, 0.4, 1.3, 10)


def _residual_partial(x, y, z):
    # The definition: correlate the residuals of x and y after least-squares regression on z.
    design = np.column_stack([np.ones_like(z), z])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return scipy.stats.pearsonr(rx, ry)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_correlation_matches_residual_regression(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=12)
    x = z + rng.normal(size=12) * 0.5
    y = 0.7 * z - 0.4 * x + rng.normal(size=12) * 0.3
    assert partial_correlation(x, y, z) == pytest.approx(_residual_partial(x, y, z), abs=1e-12)
    res = bootstrap_partial_correlation(x, y, z, num_resamples=2000, seed=seed)
    assert res.low <= res.value <= res.high
    # p-value: the t-test of a partial correlation on n - 3 df.
    t = res.value * math.sqrt(9 / (1 - res.value**2))
    assert res.p_value == pytest.approx(2 * scipy.stats.t.sf(abs(t), 9), rel=1e-9)


def test_partial_correlation_is_nan_when_z_explains_x():
    z = np.arange(6.0)
    assert math.isnan(partial_correlation(2 * z + 1, [1, 3, 2, 5, 4, 6], z))


def test_paired_difference_against_an_independent_loop():
    rng = np.random.default_rng(3)
    y = rng.normal(size=9)
    a = y + rng.normal(size=9) * 0.3
    b = y + rng.normal(size=9) * 1.0
    res = paired_bootstrap_difference(a, b, y, num_resamples=500, seed=7)
    assert res.difference == pytest.approx(
        scipy.stats.pearsonr(a, y)[0] - scipy.stats.pearsonr(b, y)[0]
    )
    gen = np.random.default_rng(7)
    idx = gen.integers(0, 9, size=(500, 9))
    diffs = []
    for row in idx:
        if np.ptp(a[row]) == 0 or np.ptp(y[row]) == 0:
            continue
        diffs.append(np.corrcoef(a[row], y[row])[0, 1] - np.corrcoef(b[row], y[row])[0, 1])
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert (res.low, res.high) == pytest.approx((lo, hi), abs=1e-12)
    assert res.prob_positive == pytest.approx(np.mean(np.asarray(diffs) > 0))
    # The same predictor twice: the difference is exactly 0 in every resample.
    same = paired_bootstrap_difference(a, a, y, num_resamples=200)
    assert same.difference == 0 and same.low == 0 and same.high == 0


def test_paired_difference_spearman_and_separation():
    y = np.arange(10.0)
    good = y.copy()
    bad = np.array([3, 9, 0, 7, 1, 8, 2, 6, 4, 5], dtype=float)
    res = paired_bootstrap_difference(good, bad, y, "spearman", num_resamples=2000)
    assert res.corr_a == pytest.approx(1.0) and res.low > 0 and res.prob_positive > 0.95


def test_seed_level_widens_the_interval():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 10)
    mean = x + rng.normal(size=10) * 0.05
    seeds = mean[:, None] + rng.normal(size=(10, 3)) * 0.3
    seeds -= seeds.mean(1, keepdims=True) - mean[:, None]  # seed means are exactly `mean`
    plain = bootstrap_correlation(x, mean, num_resamples=4000, seed=1)
    nested = seed_bootstrap_correlation(x, seeds, num_resamples=4000, seed=1)
    assert nested.value == pytest.approx(plain.value)
    assert nested.high - nested.low > plain.high - plain.low
    # Seeds that agree exactly: the seed level adds nothing.
    flat = seed_bootstrap_correlation(x, np.repeat(mean[:, None], 2, 1), num_resamples=4000, seed=1)
    assert (flat.low, flat.high) == pytest.approx((plain.low, plain.high))
    with pytest.raises(ValueError, match="y_seeds"):
        paired_bootstrap_difference(x, x, mean, y_seeds=seeds[:5])


def test_bootstrap_default_resamples_at_least_ten_thousand():
    res = bootstrap_correlation([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    assert res.resamples >= 9000  # all but the degenerate resamples of 10,000


def test_report_compares_ifid_with_rfid(tmp_path):
    from ifid_callback.probes.report import compare_predictors, write_report

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        g = float(10 * i)
        rows.append(
            {
                "name": f"v{i}",
                "latent_shape": [4, 4, 4],
                "rfid": float(rng.normal(50, 10)),
                "ifid": g + float(rng.normal(0, 2)),
                "psnr": 20.0,
                "probe_loss": 0.5,
                "gfid": g,
                "gfid_seeds": [g - 1.0, g + 1.0],
                "gfid_heldout": g + 3,
                "gfid_heldout_seeds": [g + 2.0, g + 4.0],
                "time_shift": None,
                "gfid_t": {},
                "irs": {"irs": 0.1, "irs_inf": 0.1, "irs_inf_low": 0.1, "irs_inf_high": 0.1},
            }
        )
    c = compare_predictors(rows, num_resamples=2000)
    assert c["seed_level"] and c["n"] == 8
    d = c["difference_pearson"]
    ifid = [r["ifid"] for r in rows]
    rfid = [r["rfid"] for r in rows]
    gfid = [r["gfid"] for r in rows]
    r_i, r_r = scipy.stats.pearsonr(ifid, gfid)[0], scipy.stats.pearsonr(rfid, gfid)[0]
    assert d["difference"] == pytest.approx(r_i - r_r)
    assert d["low"] > 0  # iFID is built to predict here, rFID is noise
    w = williams_test(r_i, r_r, scipy.stats.pearsonr(ifid, rfid)[0], 8)
    assert c["williams"]["t"] == pytest.approx(w.t)
    assert c["partial"]["value"] == pytest.approx(partial_correlation(ifid, gfid, rfid))
    assert c["per_seed_pearson"]["ifid"][0] == pytest.approx(
        scipy.stats.pearsonr(ifid, [r["gfid_seeds"][0] for r in rows])[0]
    )
    # The main table's intervals carry the probe-seed level too.
    from ifid_callback.probes.report import analyse

    table = analyse(rows, num_resamples=500)["correlations"]["ifid"]["gfid"]["pearson"]
    nested = seed_bootstrap_correlation(ifid, [r["gfid_seeds"] for r in rows], num_resamples=500)
    assert (table["low"], table["high"]) == pytest.approx((nested.low, nested.high))
    paths = write_report({"vaes": rows}, tmp_path, num_resamples=500)
    md = paths["markdown"].read_text()
    assert "## iFID against rFID as predictors of gfid" in md
    assert "## iFID against rFID as predictors of gfid_heldout" in md
    assert "Williams' test" in md and "Partial correlation" in md
