"""PSNR, SSIM and MSE of reconstructions as per-batch sums, averaged per image at the end."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

# SSIM's Gaussian window (torchmetrics' default, 11 x 11, sigma 1.5) is reflection-padded by 5,
# which needs at least 6 pixels per side.
_SSIM_MIN_SIDE = 6


class ReconstructionSums(NamedTuple):
    """Sums over images of per-image scores (float64 0-d tensors) and the image count.

    Sums of several batches add field by field (e.g. as metric states with ``dist_reduce_fx=
    "sum"``); :func:`reconstruction_means` divides by the count.
    """

    psnr: Tensor  # dB
    ssim: Tensor | None  # None when not computed
    mse: Tensor  # squared units of the images' value range
    count: Tensor  # int64


def reconstruction_sums(
    reconstructions: Tensor,
    targets: Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    ssim: bool = True,
) -> ReconstructionSums:
    """Per-image PSNR, SSIM and MSE of one batch, summed over the batch.

    Each score is computed per image and averaged over images at the end (the convention of VAE
    papers): PSNR of an image is ``10 log10(R^2 / MSE_image)`` with ``R = hi - lo``, so the mean
    PSNR is not the PSNR of the mean MSE. PSNR and SSIM come from
    ``torchmetrics.functional.image`` (SSIM with its defaults: Gaussian 11 x 11 window, sigma
    1.5, k1 = 0.01, k2 = 0.03) with ``data_range = R``, in the images' dtype; sums are float64.
    Reconstructions are clamped to ``value_range`` first, as an image would be when shown or saved.
    A pixel-identical reconstruction has PSNR +inf (as in torchmetrics).

    Args:
        reconstructions: (B, C, H, W) decoded images, finite, floating point.
        targets: (B, C, H, W) original images, within ``value_range``, same dtype and device.
        value_range: ``(lo, hi)`` of the images, lo < hi (e.g. the metric's ``input_range``).
        ssim: False skips SSIM (``ssim`` is then None); True needs H, W >= 6.

    Returns:
        :class:`ReconstructionSums` on the images' device.
    """
    _check_images(reconstructions, targets, value_range, ssim)
    lo, hi = float(value_range[0]), float(value_range[1])
    preds = reconstructions.detach().clamp(lo, hi)
    target = targets.detach()
    data_range = hi - lo
    psnr = peak_signal_noise_ratio(
        preds, target, data_range=data_range, reduction="none", dim=(1, 2, 3)
    )
    diff = preds.to(torch.float64) - target.to(torch.float64)
    mse = (diff * diff).flatten(1).mean(1)
    ssim_sum = None
    if ssim:
        per_image = structural_similarity_index_measure(
            preds, target, data_range=data_range, reduction="none"
        )
        ssim_sum = per_image.to(torch.float64).sum()
    return ReconstructionSums(
        psnr=psnr.to(torch.float64).sum(),
        ssim=ssim_sum,
        mse=mse.sum(),
        count=torch.tensor(preds.shape[0], dtype=torch.int64, device=preds.device),
    )


def reconstruction_means(sums: ReconstructionSums) -> dict[str, Tensor]:
    """Per-image means from accumulated sums: ``{"psnr", "ssim", "mse"}`` (ssim only if summed).

    Raises:
        ValueError: when no image was summed (there is no mean to report).
    """
    count = int(sums.count)
    if count < 1:
        raise ValueError("No reconstructions were scored; update with at least one batch first.")
    out = {"psnr": sums.psnr / count, "mse": sums.mse / count}
    if sums.ssim is not None:
        out["ssim"] = sums.ssim / count
    return out


def _check_images(
    reconstructions: Tensor, targets: Tensor, value_range: tuple[float, float], ssim: bool
) -> None:
    for name, x in (("reconstructions", reconstructions), ("targets", targets)):
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"`{name}` must be a floating-point (B, C, H, W) tensor, got "
                f"{type(x).__name__ if not isinstance(x, Tensor) else (tuple(x.shape), x.dtype)}."
            )
    if reconstructions.shape != targets.shape:
        raise ValueError(
            f"reconstructions {tuple(reconstructions.shape)} and targets {tuple(targets.shape)} "
            "must have the same shape."
        )
    if reconstructions.dtype != targets.dtype or reconstructions.device != targets.device:
        raise ValueError(
            f"reconstructions ({reconstructions.dtype}, {reconstructions.device}) and targets "
            f"({targets.dtype}, {targets.device}) must share dtype and device."
        )
    if reconstructions.shape[0] == 0:
        raise ValueError("The batch is empty; pass at least one image.")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite (lo, hi) with lo < hi, got {value_range!r}.")
    if not bool(torch.isfinite(reconstructions).all()):
        raise ValueError("`reconstructions` contains NaN or Inf; the decoder output is not finite.")
    if not bool(torch.isfinite(targets).all()) or targets.min() < lo or targets.max() > hi:
        raise ValueError(
            f"`targets` must be finite and within value_range {value_range}; got values in "
            f"[{float(targets.min()):.4g}, {float(targets.max()):.4g}]."
        )
    if ssim and min(targets.shape[-2:]) < _SSIM_MIN_SIDE:
        raise ValueError(
            f"SSIM's 11x11 window needs images of at least {_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE}, got "
            f"{tuple(targets.shape[-2:])}; pass ssim=False for smaller images."
        )
