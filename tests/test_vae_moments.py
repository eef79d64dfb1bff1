"""An encoder that returns the raw moments (mean and log-variance concatenated: 2C channels) gets a
clear error naming both channel counts and the fix, not a convolution's channel error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifid_callback import InterpolatedFID
from ifid_callback.vae import VAEAdapter
from tests.helpers import RandomFeatures, smooth_images

C = 4


class TinyVAE(nn.Module):
    """Encoder to (B, 2C, H/2, W/2) moments; decoder from (B, C, H/2, W/2) latents."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.to_moments = nn.Conv2d(3, 2 * C, 3, stride=2, padding=1)
        self.from_latent = nn.Conv2d(C, 3, 3, padding=1)

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_moments(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.from_latent(F.interpolate(z, scale_factor=2.0)))


def test_the_adapter_names_the_moments_and_the_fix():
    vae = TinyVAE()
    adapter = VAEAdapter(encoder=vae.moments, decoder=vae.decode)
    z = adapter.encode(smooth_images(2, size=8))
    assert z.shape[1] == 2 * C
    with pytest.raises(ValueError) as info:
        adapter.decode(z)
    text = str(info.value)
    assert f"{2 * C} channels" in text and f"takes {C}" in text
    assert "mean and log-variance" in text
    assert "DiagonalGaussianDistribution(moments)" in text
    assert "moments.chunk(2, dim=1)[0]" in text
    assert isinstance(info.value.__cause__, RuntimeError)  # the decoder's own error is kept


def test_the_fixes_the_message_gives_work():
    vae = TinyVAE()
    x = smooth_images(2, size=8)
    mean = VAEAdapter(encoder=lambda x: vae.moments(x).chunk(2, dim=1)[0], decoder=vae.decode)
    assert mean.decode(mean.encode(x)).shape == x.shape
    vae_module = pytest.importorskip("diffusers.models.autoencoders.vae")
    posterior = vae_module.DiagonalGaussianDistribution
    adapter = VAEAdapter(encoder=lambda x: posterior(vae.moments(x)), decoder=vae.decode)
    z = adapter.encode(x)
    torch.testing.assert_close(z, vae.moments(x).chunk(2, dim=1)[0])
    assert adapter.decode(z).shape == x.shape


def test_the_metric_reports_the_moments_at_the_first_decode():
    vae = TinyVAE()
    metric = InterpolatedFID(
        encoder=vae.moments, decoder=vae.decode, feature=RandomFeatures(3 * 8 * 8), bank=None
    )
    with pytest.raises(ValueError, match=rf"{2 * C} channels.*takes {C}.*mean and log-variance"):
        metric.update(smooth_images(6, size=8))
        metric.compute()


def test_a_diffusers_encoder_with_its_quant_conv_is_recognised():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=C,
        norm_num_groups=8,
    ).eval()
    adapter = VAEAdapter(vae=vae, encoder=lambda x: vae.quant_conv(vae.encoder(x)))
    z = adapter.encode(smooth_images(2, size=16))
    assert z.shape[1] == 2 * C
    with pytest.raises(ValueError, match=rf"{2 * C} channels.*takes {C}"):
        adapter.decode(z)


def test_other_channel_errors_are_left_as_they_are():
    vae = TinyVAE()
    # 3C channels are not the moments of a C-channel latent: the decoder's own error stands.
    adapter = VAEAdapter(
        encoder=lambda x: torch.cat([vae.moments(x)] * 2, 1)[:, : 3 * C], decoder=vae.decode
    )
    with pytest.raises(RuntimeError, match="channels") as info:
        adapter.decode(adapter.encode(smooth_images(2, size=8)))
    assert not isinstance(info.value, ValueError)


def test_vector_latents_before_a_linear_decoder_are_recognised():
    torch.manual_seed(0)
    to_moments, from_latent = nn.Linear(3 * 8 * 8, 2 * C), nn.Linear(C, 3 * 8 * 8)
    adapter = VAEAdapter(
        encoder=lambda x: to_moments(x.flatten(1)),
        decoder=lambda z: from_latent(z).reshape(-1, 3, 8, 8),
    )
    z = adapter.encode(smooth_images(2, size=8))
    with pytest.raises(ValueError, match=rf"{2 * C} channels but the decoder takes {C}"):
        adapter.decode(z)
