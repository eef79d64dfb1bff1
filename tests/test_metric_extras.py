"""The metric's extras: standard errors, PSNR/SSIM/MSE, KID and precision/recall from one pass."""

import numpy as np
import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.functional import (
    frechet_influence,
    kernel_inception_distances,
    precision_recall,
)
from tests.helpers import (
    RandomFeatures,
    decode,
    encode,
    numpy_slerp,
    run_ranks,
    smooth_images,
)

SIZE = 8
IN_DIM = 3 * SIZE * SIZE
ALL_EXTRAS = {"uncertainty": True, "kid": True, "precision_recall": True}


def make_metric(bank=None, **kwargs):
    kwargs.setdefault("feature", RandomFeatures(IN_DIM))
    return InterpolatedFID(encoder=encode, decoder=decode, bank=bank, **kwargs)


def make_bank(n=64, seed=2):
    bank = LatentBank(capacity=n)
    bank.add(encode(smooth_images(n, seed=seed)))
    return bank


def reference_rows(queries, bank_latents, net):
    """Real, interpolant and reconstruction features, brute force (cosine NN, numpy slerp)."""
    z = encode(queries).reshape(len(queries), -1).double()
    ref = bank_latents.reshape(len(bank_latents), -1).double()
    sim = (z / z.norm(dim=1, keepdim=True)) @ (ref / ref.norm(dim=1, keepdim=True)).T
    nn_idx = sim.argmax(1)
    z_hat = np.stack(
        [numpy_slerp(z[i].numpy(), ref[j].numpy(), 0.5) for i, j in enumerate(nn_idx.tolist())]
    )
    shape = (len(queries), 3, SIZE // 2, SIZE // 2)
    interp = decode(torch.from_numpy(z_hat).float().reshape(shape)).clamp(-1, 1)
    recon = decode(z.float().reshape(shape)).clamp(-1, 1)
    return net(queries).double(), net(interp).double(), net(recon).double(), recon


# ------------------------------------------------------------------ each number against its reference
def test_extras_equal_the_functions_on_the_same_features():
    queries = smooth_images(48, seed=1)
    bank = make_bank()
    metric = make_metric(bank, **ALL_EXTRAS)
    for batch in queries.split(10):
        metric.update(batch)
    out = metric.compute()
    real, interp, recon, _ = reference_rows(
        queries, bank.vectors.reshape(64, 3, 4, 4), RandomFeatures(IN_DIM)
    )
    se = frechet_influence(real, {"ifid": interp, "rfid": recon})
    assert float(out["ifid_std"]) == pytest.approx(float(se["ifid"].std_error), rel=1e-5)
    assert float(out["rfid_std"]) == pytest.approx(float(se["rfid"].std_error), rel=1e-5)
    assert float(se["ifid"].std_error) > 0
    # One subset holds every row when N <= 1000: the same numbers as 100 subsets.
    kid = kernel_inception_distances(real, {"ikid": interp, "rkid": recon}, paired=True)
    for name in ("ikid", "rkid"):
        assert float(out[name]) == pytest.approx(float(kid[name].mean), rel=1e-5)
        assert float(out[f"{name}_std"]) == pytest.approx(float(kid[name].std), abs=1e-9)
    pr = precision_recall(real, interp, k=3)
    assert float(out["iprecision"]) == float(pr.precision)
    assert float(out["irecall"]) == float(pr.recall)
    assert all(v.dtype == torch.float64 and v.ndim == 0 for v in out.values())


def test_psnr_ssim_mse_equal_torchmetrics_classes_on_the_reconstructions():
    queries = smooth_images(40, seed=3)
    bank = make_bank()
    metric = make_metric(bank)
    psnr = PeakSignalNoiseRatio(data_range=2.0, reduction="elementwise_mean", dim=(1, 2, 3))
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0)
    for batch in queries.split(16):
        metric.update(batch)
        recon = decode(encode(batch)).clamp(-1, 1)
        psnr.update(recon, batch)
        ssim.update(recon, batch)
    out = metric.compute()
    recon = decode(encode(queries)).clamp(-1, 1)
    assert set(out) == {"ifid", "rfid", "ifid_std", "rfid_std", "psnr", "ssim", "mse"}
    assert float(out["psnr"]) == pytest.approx(float(psnr.compute()), rel=1e-6)
    assert float(out["ssim"]) == pytest.approx(float(ssim.compute()), rel=1e-6)
    assert float(out["mse"]) == pytest.approx(
        float((recon.double() - queries.double()).pow(2).mean()), rel=1e-9
    )


def test_reconstruction_metrics_in_self_reference_mode_and_options_off():
    queries = smooth_images(30, seed=4)
    on = make_metric(None)
    off = make_metric(None, uncertainty=False, reconstruction_metrics=False)
    for m in (on, off):
        m.update(queries)
    a, b = on.compute(), off.compute()
    assert set(b) == {"ifid", "rfid"}
    assert float(a["ifid"]) == pytest.approx(float(b["ifid"]), rel=1e-12)
    assert float(a["rfid"]) == pytest.approx(float(b["rfid"]), rel=1e-12)
    recon = decode(encode(queries)).clamp(-1, 1)
    mse = (recon - queries).double().pow(2).flatten(1).mean(1)
    assert float(a["psnr"]) == pytest.approx(float((10 * torch.log10(4 / mse)).mean()), rel=1e-5)
    assert float(a["ifid_std"]) > 0 and float(a["rfid_std"]) > 0
    no_rfid = make_metric(None, compute_rfid=False)
    no_rfid.update(queries)
    assert set(no_rfid.compute()) == {"ifid", "ifid_std"}


def test_ssim_left_out_for_images_below_its_window():
    metric = make_metric(None, feature=RandomFeatures(3 * 4 * 4))
    with pytest.warns(UserWarning, match="SSIM needs images of at least 6x6"):
        metric.update(smooth_images(10, size=4, seed=5))
    out = metric.compute()
    assert "psnr" in out and "mse" in out and "ssim" not in out


@pytest.mark.parametrize(
    "name", ["uncertainty", "reconstruction_metrics", "kid", "precision_recall"]
)
def test_options_must_be_bools(name):
    with pytest.raises(ValueError, match=rf"{name} must be True or False, got 'yes'"):
        make_metric(None, **{name: "yes"})


def test_too_few_images_for_an_extra_is_an_error():
    metric = make_metric(make_bank(), uncertainty=False, precision_recall=True)
    metric.update(smooth_images(3, seed=6))
    with pytest.raises(
        ValueError, match="need at least 4 query images, got 3.*precision_recall=False"
    ):
        metric.compute()
    metric = make_metric(make_bank())
    metric.update(smooth_images(2, seed=6))
    with pytest.warns(UserWarning, match="at least 3 query images, got 2.*uncertainty=False"):
        out = metric.compute()
    assert "ifid" in out and "ifid_std" not in out and "rfid_std" not in out


# ------------------------------------------------------------------ state: failures, reset, cache
def test_failed_update_changes_nothing_and_reset_frees_the_rows():
    broken = []

    def flaky_decode(z):
        if broken:
            raise RuntimeError("decoder failed")
        return decode(z)

    metric = InterpolatedFID(
        encoder=encode,
        decoder=flaky_decode,
        feature=RandomFeatures(IN_DIM),
        bank=make_bank(),
        **ALL_EXTRAS,
    )
    metric.update(smooth_images(12, seed=7))
    before = {
        k: [t.clone() for t in v] if isinstance(v, list) else v.clone()
        for k, v in metric.metric_state.items()
    }
    broken.append(True)
    with pytest.raises(RuntimeError, match="decoder failed"):
        metric.update(smooth_images(5, seed=8))
    for key, value in metric.metric_state.items():
        if isinstance(value, list):
            assert len(value) == len(before[key]) and all(
                torch.equal(a, b) for a, b in zip(value, before[key])
            )
        else:
            assert torch.equal(value, before[key]), key
    metric.reset()
    assert all(
        len(metric.metric_state[k]) == 0
        for k in (
            "real_feature_rows",
            "interp_feature_rows",
            "recon_feature_rows",
            "query_positions",
        )
    )


def test_cached_real_rows_pair_by_position_across_rounds():
    queries = smooth_images(40, seed=9)
    bank = make_bank()
    metric = make_metric(bank, reset_real_features=False, **ALL_EXTRAS)
    metric.update(queries)
    first = metric.compute()
    metric.reset()
    calls = metric.feature_net.calls
    # The same images in another order, with their positions: paired by position.
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    for part in order.split(7):
        metric.update(queries[part], positions=part)
    assert metric.feature_net.calls == calls + len(order.split(7))  # no real pass
    second = metric.compute()
    for key in first:
        assert float(second[key]) == pytest.approx(float(first[key]), rel=1e-6, abs=1e-12), key
    # Another query set under cached rows is refused, never misaligned.
    metric.reset()
    metric.update(queries[:30])
    with pytest.raises(
        ValueError, match=r"real-image feature rows \(40\) are not those of this round's 30"
    ):
        metric.compute()


def test_real_statistics_round_trip_with_rows_and_without():
    queries = smooth_images(24, seed=10)
    bank = make_bank()
    source = make_metric(bank, reset_real_features=False)
    source.update(queries)
    expected = source.compute()
    stats = source.real_statistics(per_image=True)
    assert stats["real_feature_rows"].shape == (24, 16) and stats["real_row_positions"].shape == (
        24,
    )
    assert set(source.real_statistics()) == set(InterpolatedFID.REAL_STATES)

    with_rows = make_metric(bank, reset_real_features=False)
    with_rows.load_real_statistics(stats)
    calls = with_rows.feature_net.calls
    with_rows.update(queries)
    assert with_rows.feature_net.calls == calls + 1  # decodes only
    out = with_rows.compute()
    assert float(out["ifid_std"]) == pytest.approx(float(expected["ifid_std"]), rel=1e-6)

    sums_only = make_metric(bank, reset_real_features=False)
    sums_only.load_real_statistics(source.real_statistics())
    calls = sums_only.feature_net.calls
    sums_only.update(queries)
    assert sums_only.feature_net.calls == calls + 2  # the real rows are computed again
    out = sums_only.compute()
    assert float(out["ifid_std"]) == pytest.approx(float(expected["ifid_std"]), rel=1e-6)
    sums_only.reset()  # ... and kept from then on
    calls = sums_only.feature_net.calls
    sums_only.update(queries)
    assert sums_only.feature_net.calls == calls + 1
    with pytest.raises(ValueError, match="only one of 'real_feature_rows'"):
        sums_only.load_real_statistics(
            {**source.real_statistics(), "real_feature_rows": stats["real_feature_rows"]}
        )


# ------------------------------------------------------------------ calibration
def test_reported_standard_error_matches_the_spread_over_independent_draws():
    """Mean reported ifid_std over 300 independent draws of 100 queries vs the empirical std.

    frechet_influence errs on the large side by 7-22% on Gaussian features; the empirical std of
    300 draws has a relative error of ~4%: the ratio must lie in [0.85, 1.4].
    """
    torch.manual_seed(0)
    bank = make_bank(128, seed=100)
    net = RandomFeatures(IN_DIM, num_features=8)
    values, reported, rvalues, rreported = [], [], [], []
    for draw in range(300):
        metric = make_metric(bank, feature=net, reconstruction_metrics=False)
        metric.update(smooth_images(100, seed=1000 + draw))
        out = metric.compute()
        values.append(float(out["ifid"]))
        reported.append(float(out["ifid_std"]))
        rvalues.append(float(out["rfid"]))
        rreported.append(float(out["rfid_std"]))
    ratio = np.mean(reported) / np.std(values, ddof=1)
    rratio = np.mean(rreported) / np.std(rvalues, ddof=1)
    assert 0.85 <= ratio <= 1.4, ratio
    assert 0.85 <= rratio <= 1.4, rratio


# ------------------------------------------------------------------ two processes
def _run(use_bank: bool, rank: int, world: int, rounds: int = 2) -> list[dict]:
    queries = smooth_images(48, seed=1)
    metric = make_metric(make_bank() if use_bank else None, reset_real_features=False, **ALL_EXTRAS)
    results = []
    for _ in range(rounds):  # the second round uses the cached real rows
        metric.reset()
        for batch in queries[rank::world].split(8):
            metric.update(batch)
        results.append({k: float(v) for k, v in metric.compute().items()})
    return results


def _rank(rank: int, world: int, use_bank: bool) -> list[dict]:
    return _run(use_bank, rank, world)


@pytest.mark.parametrize("use_bank", [True, False], ids=["bank", "self-reference"])
def test_two_processes_give_the_extras_of_one(tmp_path, use_bank):
    single = _run(use_bank, 0, 1)
    assert single[0] == pytest.approx(single[1], rel=1e-9)
    for out in run_ranks(_rank, 2, tmp_path, use_bank):
        for got, want in zip(out, single):
            assert set(got) == set(want)
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-12), key
