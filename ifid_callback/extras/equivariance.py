"""The EQ-VAE scale-equivariance error of the VAE, from the encode done for iFID."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows, scalar_sum
from ifid_callback.functional.equivariance import equivariance_sums


class ScaleEquivariance(Extra):
    """``"equivariance_error"``: relative MSE between the decode of the 2x average-pooled query
    latents and the 2x average-pooled query images (see
    :mod:`ifid_callback.functional.equivariance`), a ratio of sums over every query. Costs one
    decode of latents a quarter the size. Needs latent maps with even sides and a decoder that
    takes them at half size."""

    key = "equivariance"
    scores_latents = True

    def states(self) -> dict[str, Tensor]:
        return {"equivariance_error_sum": scalar_sum(), "equivariance_scale_sum": scalar_sum()}

    def score_latents(
        self, latents: Tensor, images: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> dict[str, Tensor]:
        sums = equivariance_sums(latents, images, decode, factor=2)
        return {
            "equivariance_error_sum": sums.error.sum(),
            "equivariance_scale_sum": sums.scale.sum(),
        }

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        scale = state["equivariance_scale_sum"]
        if scale <= 0:
            raise ValueError(
                "equivariance_error is undefined: every downsampled query image is flat (one "
                "colour); evaluate on images with some structure or pass equivariance=False."
            )
        return {"equivariance_error": state["equivariance_error_sum"] / scale}
