"""PSNR, SSIM and MSE of the reconstructions, from the decode already done for rFID."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows, count, scalar_sum
from ifid_callback.functional.reconstruction import reconstruction_sums

# SSIM's 11 x 11 window needs at least this many pixels per side.
SSIM_MIN_SIDE = 6


class ReconstructionScores(Extra):
    """``"psnr"`` (dB), ``"ssim"``, ``"mse"``: per-image means (torchmetrics' definitions, data
    range ``input_range``), each image scored as shown, clamped to ``input_range``, in every
    preprocessing mode of the features. SSIM needs images of at least 6 x 6 pixels.

    Args:
        input_range: (low, high) of the images.
    """

    key = "reconstruction_metrics"
    scores_reconstructions = True

    def __init__(self, input_range: tuple[float, float]) -> None:
        super().__init__()
        self.input_range = input_range
        self._warned_ssim = False

    def states(self) -> dict[str, Tensor]:
        sums = {f"recon_{name}_sum": scalar_sum() for name in ("psnr", "ssim", "mse")}
        return {**sums, "recon_scored": count(), "recon_ssim_scored": count()}

    def score(self, reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
        with_ssim = min(images.shape[-2:]) >= SSIM_MIN_SIDE
        if not with_ssim and not self._warned_ssim:
            self._warned_ssim = True
            warnings.warn(
                f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels, got "
                f"{tuple(images.shape[-2:])}: only PSNR and MSE are reported.",
                UserWarning,
                stacklevel=6,
            )
        found = reconstruction_sums(
            reconstructions.to(images.dtype), images, self.input_range, ssim=with_ssim
        )
        n = found.count
        return {
            "recon_psnr_sum": found.psnr,
            "recon_ssim_sum": found.ssim if with_ssim else found.psnr.new_zeros(()),
            "recon_mse_sum": found.mse,
            "recon_scored": n,
            "recon_ssim_scored": n if with_ssim else n.new_zeros(()),
        }

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        scored = int(state["recon_scored"])
        if scored < 1:
            return {}
        out = {"psnr": state["recon_psnr_sum"] / scored}
        if int(state["recon_ssim_scored"]) == scored:
            out["ssim"] = state["recon_ssim_sum"] / scored
        out["mse"] = state["recon_mse_sum"] / scored
        return out
