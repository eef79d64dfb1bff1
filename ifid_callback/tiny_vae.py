"""A small convolutional KL-VAE for the demo, the tests and the probe zoo (CPU-sized)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TinyVAEConfig:
    """Architecture of :class:`TinyVAE`.

    Attributes:
        in_channels: image channels.
        latent_channels: channels of the latent map.
        base_channels: width of the first conv stage; doubled at each downsampling.
        downsamples: number of stride-2 stages; a 32x32 image gives a (32 / 2**d)^2 latent map.
        latent_noise: std of Gaussian noise added to latents before decoding during training
            (a smoothness regulariser; 0 disables).
    """

    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 32
    downsamples: int = 2
    latent_noise: float = 0.0


class DiagonalGaussian:
    """Posterior q(z|x) = N(mean, exp(logvar)); ``sample`` draws with an optional generator."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(
            self.mean.shape,
            generator=generator,
            device="cpu" if generator is not None else self.mean.device,
        )
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dimensions, shape (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class TinyVAE(nn.Module):
    """Convolutional KL-VAE with the call shape of diffusers' AutoencoderKL.

    ``encode(x)`` returns a :class:`DiagonalGaussian` (also reachable as ``.latent_dist``),
    ``decode(z)`` returns images in [-1, 1] (tanh). Images are (B, C, H, W) in [-1, 1] with H and W
    divisible by ``2 ** downsamples``.
    """

    def __init__(self, config: TinyVAEConfig | None = None, **kwargs: float) -> None:
        super().__init__()
        self.config = config or TinyVAEConfig(**kwargs)
        c = self.config
        widths = [c.base_channels * 2**i for i in range(c.downsamples + 1)]
        enc: list[nn.Module] = [_block(c.in_channels, widths[0])]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            enc += [nn.Conv2d(w_in, w_out, 4, stride=2, padding=1), nn.SiLU(), _block(w_out, w_out)]
        enc.append(nn.Conv2d(widths[-1], 2 * c.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, widths[-1], 3, padding=1), nn.SiLU()]
        for w_in, w_out in zip(widths[::-1][:-1], widths[::-1][1:]):
            dec += [
                _block(w_in, w_in),
                nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1),
                nn.SiLU(),
            ]
        dec += [_block(widths[0], widths[0]), nn.Conv2d(widths[0], c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        posterior = DiagonalGaussian(mean, logvar)
        posterior.latent_dist = posterior  # AutoencoderKL-style access
        return posterior

    def decode(self, z: Tensor) -> Tensor:
        return torch.tanh(self.decoder(z))

    def forward(self, x: Tensor, sample: bool = True) -> tuple[Tensor, DiagonalGaussian, Tensor]:
        """Reconstruct ``x``; returns (reconstruction, posterior, the latents that were decoded)."""
        posterior = self.encode(x)
        z = posterior.sample() if sample else posterior.mean
        z_dec = z
        if self.training and self.config.latent_noise > 0:
            z_dec = z + self.config.latent_noise * torch.randn_like(z)
        return self.decode(z_dec), posterior, z

    def loss(self, x: Tensor, kl_weight: float = 1e-4) -> dict[str, Tensor]:
        """Training loss: per-pixel MSE + ``kl_weight`` * KL per latent value.

        Returns a dict with ``loss``, ``recon``, ``kl`` (scalars) and ``latents`` (the posterior
        means, detached, (B, C, h, w)), so a training monitor can reuse them at no extra cost.
        """
        recon, posterior, _ = self(x)
        rec = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return {
            "loss": rec + kl_weight * kl,
            "recon": rec,
            "kl": kl,
            "latents": posterior.mean.detach(),
        }

    def config_dict(self) -> dict:
        return asdict(self.config)


def small_autoencoder_kl(
    seed: int,
    block_out_channels: tuple[int, int] = (32, 64),
    norm_num_groups: int = 16,
    sample_size: int = 64,
) -> nn.Module:
    """A two-stage diffusers ``AutoencoderKL`` (images -> 4-channel latents at 1/2 the side)
    with seeded random weights: a real diffusers VAE small enough for CPU checks. Needs
    ``diffusers``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=block_out_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
    )
