"""The latent power spectrum of the query latents, from the encode done for iFID."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows, scalar_sum
from ifid_callback.functional.spectrum import spectral_energy


class LatentSpectrum(Extra):
    """``"latent_hf_energy"``: the fraction of the query latents' energy at or above half the
    Nyquist frequency (2-D DCT per channel; see :mod:`ifid_callback.functional.spectrum`), a ratio
    of sums over every query. Needs latent maps (B, C, H, W)."""

    key = "latent_spectrum"
    scores_latents = True

    def states(self) -> dict[str, Tensor]:
        return {"latent_hf_energy_sum": scalar_sum(), "latent_energy_sum": scalar_sum()}

    def score_latents(
        self, latents: Tensor, images: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> dict[str, Tensor]:
        energy = spectral_energy(latents)
        return {
            "latent_hf_energy_sum": energy.high.sum(),
            "latent_energy_sum": energy.total.sum(),
        }

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        total = state["latent_energy_sum"]
        if total <= 0:
            return {"latent_hf_energy": torch.zeros((), dtype=torch.float64)}
        return {"latent_hf_energy": state["latent_hf_energy_sum"] / total}
