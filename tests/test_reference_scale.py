"""A bank of latents on another scale than the queries' (the diffusion habit of multiplying
latents by a scaling_factor before caching them) passes every shape check, but interpolation then
mixes vectors of unlike size: the metric warns once, naming the fix; raw latents do not warn."""

from __future__ import annotations

import warnings

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

MESSAGE = r"query latents are .*x the size of the reference latents.*scaling_factor"


def _setup(scale: float):
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8)).eval()
    bank = LatentBank(capacity=64)
    with torch.no_grad():
        bank.add(vae.encode(smooth_images(48, 3, 16, seed=2)).mean * scale)
    metric = InterpolatedFID(vae=vae, bank=bank, feature=RandomFeatures(3 * 16 * 16))
    return metric, smooth_images(16, 3, 16, seed=1)


@pytest.mark.parametrize("scale", [0.18215, 1 / 0.18215], ids=["scaled", "unscaled-bank"])
def test_a_bank_on_another_scale_warns_once(scale):
    metric, queries = _setup(scale)
    with pytest.warns(UserWarning, match=MESSAGE) as caught:
        metric.update(queries[:8])
        metric.update(queries[8:])
    assert len([w for w in caught if "reference latents" in str(w.message)]) == 1
    ratio = float(str(caught[0].message).split("are ")[1].split("x")[0])
    assert ratio == pytest.approx(1 / scale, rel=0.25)


def test_raw_latents_do_not_warn():
    metric, queries = _setup(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(queries)
        metric.compute()
