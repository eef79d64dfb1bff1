"""PSNR / SSIM / MSE sums against torchmetrics' own metric classes and hand-computed cases."""

import math

import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanSquaredError

from ifid_callback.functional.reconstruction import (
    ReconstructionSums,
    reconstruction_means,
    reconstruction_sums,
)


def _batches(dtype, value_range=(-1.0, 1.0)):
    lo, hi = value_range
    g = torch.Generator().manual_seed(0)
    out = []
    for b in (3, 5):
        target = torch.rand(b, 3, 16, 20, generator=g, dtype=dtype) * (hi - lo) + lo
        # Some decoded values fall outside the range: both sides clamp them.
        recon = target + 0.15 * (hi - lo) * torch.randn(target.shape, generator=g, dtype=dtype)
        out.append((recon, target))
    return out


def _accumulate(batches, value_range):
    total = None
    for recon, target in batches:
        s = reconstruction_sums(recon, target, value_range)
        total = s if total is None else ReconstructionSums(*(a + b for a, b in zip(total, s)))
    return reconstruction_means(total)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_means_equal_torchmetrics_classes_over_several_batches(dtype, value_range):
    batches = _batches(dtype, value_range)
    ours = _accumulate(batches, value_range)
    # torchmetrics with a (lo, hi) data_range clamps to it; dim=(1, 2, 3) averages PSNR per image.
    psnr = PeakSignalNoiseRatio(data_range=value_range, dim=(1, 2, 3))
    ssim = StructuralSimilarityIndexMeasure(data_range=value_range)
    mse = MeanSquaredError()
    for metric in (psnr, ssim, mse):
        metric.set_dtype(dtype)  # their sums are float32 unless told otherwise
    for recon, target in batches:
        psnr.update(recon, target)
        ssim.update(recon, target)
        mse.update(recon.clamp(*value_range).flatten(), target.flatten())
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    # torchmetrics' PSNR class rounds some constants to float32 (10 / ln 10, the range): 1e-7.
    assert float(ours["psnr"]) == pytest.approx(float(psnr.compute()), rel=max(rel, 1e-7))
    direct = [
        10 * math.log10((value_range[1] - value_range[0]) ** 2 / float(e))
        for recon, target in batches
        for e in ((recon.double().clamp(*value_range) - target.double()) ** 2).mean((1, 2, 3))
    ]
    assert float(ours["psnr"]) == pytest.approx(sum(direct) / len(direct), rel=max(rel, 1e-6))
    assert float(ours["ssim"]) == pytest.approx(float(ssim.compute()), rel=rel)
    assert float(ours["mse"]) == pytest.approx(float(mse.compute()), rel=rel)
    assert all(v.dtype == torch.float64 for v in ours.values())


def test_psnr_is_averaged_per_image_by_hand():
    # Range (-1, 1): R = 2. Image errors 0.2 and 0.02 everywhere: PSNR 10 log10(4 / 0.04) = 20 dB
    # and 40 dB, mean 30 dB (the PSNR of the mean MSE would be 22.97 dB). MSE mean 0.0202.
    target = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    recon = target.clone()
    recon[0] += 0.2
    recon[1] += 0.02
    means = reconstruction_means(reconstruction_sums(recon, target, (-1.0, 1.0)))
    assert float(means["psnr"]) == pytest.approx(30.0)
    assert float(means["mse"]) == pytest.approx((0.04 + 0.0004) / 2)
    assert float(means["ssim"]) < 1.0
    same = reconstruction_means(reconstruction_sums(target, target, (-1.0, 1.0)))
    assert float(same["ssim"]) == pytest.approx(1.0) and float(same["mse"]) == 0.0
    assert math.isinf(float(same["psnr"]))


def test_reconstructions_are_clamped_to_the_value_range():
    target = torch.full((1, 1, 8, 8), 1.0)
    over = reconstruction_sums(target + 5.0, target, (-1.0, 1.0))
    assert float(over.mse) == 0.0


def test_small_images_without_ssim_and_clear_errors():
    target = torch.zeros(2, 3, 4, 4)
    s = reconstruction_sums(target + 0.1, target, ssim=False)
    assert s.ssim is None and int(s.count) == 2
    assert "ssim" not in reconstruction_means(s)
    with pytest.raises(ValueError, match="ssim=False"):
        reconstruction_sums(target + 0.1, target)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_sums(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))
    with pytest.raises(ValueError, match="NaN or Inf"):
        reconstruction_sums(torch.full((1, 1, 8, 8), float("nan")), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="within value_range"):
        reconstruction_sums(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="lo < hi"):
        reconstruction_sums(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), (1.0, 1.0))
    with pytest.raises(ValueError, match="share dtype"):
        reconstruction_sums(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="no reconstructions|No reconstructions"):
        zero = torch.zeros((), dtype=torch.float64)
        reconstruction_means(ReconstructionSums(zero, None, zero, torch.tensor(0)))
