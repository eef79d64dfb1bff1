"""A bank of latents on another scale than the queries' (the diffusion habit of storing latents
as the diffusion model consumes them: multiplied by a scaling_factor, shifted by a shift_factor)
passes every shape check, but interpolation then mixes vectors of unlike size: the metric warns
once, naming the fix, after enough query latents; a bank of raw latents never warns."""

from __future__ import annotations

import warnings

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, decode, encode, smooth_images

MESSAGE = r"query latents are on another scale than the reference latents.*scaling_factor"
# (scale, shift) of SD, SDXL, SD3, FLUX latents as their diffusion models consume them, and x1.9.
AFFINE = {
    "sd": (0.18215, 0.0),
    "sdxl": (0.13025, 0.0),
    "sd3": (1.5305, 0.0609),
    "flux": (0.3611, 0.1159),
    "x1.9": (1.9, 0.0),
}


def _setup(scale: float, shift: float = 0.0, vae: str = "tiny"):
    """A metric whose bank holds ``(z - shift) * scale`` of other images' latents ``z``: from a
    TinyVAE ("tiny"), or the pooled images themselves ("pool", zero-mean latents)."""
    bank = LatentBank(capacity=96)
    reference = smooth_images(96, 3, 16, seed=2)
    feature = RandomFeatures(3 * 16 * 16)
    if vae == "tiny":
        torch.manual_seed(0)
        model = TinyVAE(TinyVAEConfig(base_channels=8)).eval()
        with torch.no_grad():
            bank.add((model.encode(reference).mean - shift) * scale)
        metric = InterpolatedFID(vae=model, bank=bank, feature=feature)
    else:
        bank.add((encode(reference) - shift) * scale)
        metric = InterpolatedFID(encoder=encode, decoder=decode, bank=bank, feature=feature)
    return metric, smooth_images(72, 3, 16, seed=1)


def _low_contrast_first(queries: torch.Tensor) -> torch.Tensor:
    """The queries with the first image replaced by a nearly flat grey one."""
    first = 0.05 * queries[:1]
    return torch.cat([first, queries[1:]])


@pytest.mark.parametrize("vae", ["tiny", "pool"])
@pytest.mark.parametrize("name", list(AFFINE))
def test_a_bank_on_another_scale_warns_once(name, vae):
    metric, queries = _setup(*AFFINE[name], vae=vae)
    with pytest.warns(UserWarning, match=MESSAGE) as caught:
        for batch in queries.split(8):
            metric.update(batch)
    assert len([w for w in caught if "reference latents" in str(w.message)]) == 1


def test_a_bank_of_the_queries_raw_latents_scaled_up_warns_with_the_inverse_too():
    metric, queries = _setup(1 / 0.18215)  # the encoder returns scaled latents, the bank raw
    with pytest.warns(UserWarning, match=MESSAGE):
        for batch in queries.split(8):
            metric.update(batch)


@pytest.mark.parametrize("vae", ["tiny", "pool"])
def test_raw_latents_do_not_warn_even_after_a_low_contrast_first_image(vae):
    metric, queries = _setup(1.0, vae=vae)
    queries = _low_contrast_first(queries)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(queries[:1])
        for batch in queries[1:].split(8):
            metric.update(batch)
        metric.compute()
