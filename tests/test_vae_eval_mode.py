"""A measurement runs the VAE in eval mode, whatever mode the caller left it in: a VAE in
training mode mid-training gives the numbers of the same VAE in eval mode, and neither its
BatchNorm running statistics nor any module's mode change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ifid_callback import InterpolatedFID
from tests.helpers import RandomFeatures, smooth_images


class NormDropVAE(nn.Module):
    """BatchNorm in the encoder and dropout in the decoder: both act differently in training."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.dec = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(4, 3, 3, padding=1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)


def _scores(vae: nn.Module, images: torch.Tensor) -> dict[str, float]:
    metric = InterpolatedFID(vae=vae, feature=RandomFeatures(3 * 8 * 8))
    metric.update(images)
    return {k: float(v) for k, v in metric.compute().items()}


def _train_a_little(vae: NormDropVAE) -> None:
    """Running statistics away from their initial values, as in a model being trained."""
    vae.train()
    with torch.no_grad():
        for seed in range(3):
            vae.enc(smooth_images(16, 3, 8, seed=10 + seed) * 0.5 + 0.2)


@pytest.mark.parametrize("how", ["vae", "bound methods"])
def test_a_vae_left_in_training_mode_is_measured_in_eval_mode(how):
    torch.manual_seed(0)
    vae = NormDropVAE()
    _train_a_little(vae)
    images = smooth_images(24, 3, 8, seed=1)
    vae.eval()
    expected = _scores(vae, images)
    vae.train()
    vae.dec[0].eval()  # a sub-module the caller set apart keeps its own mode
    stats = {k: v.clone() for k, v in vae.enc[1].state_dict().items()}
    if how == "vae":
        got = _scores(vae, images)
    else:
        metric = InterpolatedFID(vae.encode, vae.decode, feature=RandomFeatures(3 * 8 * 8))
        metric.update(images)
        got = {k: float(v) for k, v in metric.compute().items()}
    assert got == pytest.approx(expected, rel=1e-6)
    for key, value in vae.enc[1].state_dict().items():
        assert torch.equal(value, stats[key]), key  # running stats untouched
    assert vae.training and vae.enc.training and vae.enc[1].training
    assert not vae.dec[0].training
