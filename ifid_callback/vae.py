"""Drive any VAE through two calls: images -> latents and latents -> images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

EncodeFn = Callable[[Tensor], Any]
DecodeFn = Callable[[Tensor], Any]


class VAEAdapter:
    """Uniform ``encode``/``decode`` over diffusers-style VAEs and plain callables.

    Encoder outputs understood: a tensor; a posterior with ``mean``/``mode()``/``sample()``
    (diffusers' ``DiagonalGaussianDistribution``); an output object with ``latent_dist``
    (AutoencoderKL), ``latents`` (AutoencoderTiny, VQModel) or ``latent`` (AutoencoderDC); or a
    tuple whose first item is one of these. Decoder outputs: a tensor, an object with ``sample``
    (diffusers' ``DecoderOutput``) or a tuple whose first item is the images.

    Latents are used as the VAE returns them, without ``scaling_factor``/``shift_factor``: nearest
    neighbours and interpolation are defined on the raw latent space.

    Args:
        vae: an object with ``encode`` and ``decode`` methods (e.g. ``diffusers.AutoencoderKL``).
        encoder, decoder: callables used instead of (or to override) the VAE's methods.
        sample_posterior: draw ``z ~ q(z|x)`` instead of taking the posterior mean.
    """

    def __init__(
        self,
        vae: Any = None,
        encoder: EncodeFn | None = None,
        decoder: DecodeFn | None = None,
        sample_posterior: bool = False,
    ) -> None:
        if vae is not None:
            missing = [m for m in ("encode", "decode") if not callable(getattr(vae, m, None))]
            if missing and (
                ("encode" in missing and encoder is None)
                or ("decode" in missing and decoder is None)
            ):
                raise TypeError(
                    f"vae={type(vae).__name__} has no callable {' / '.join(missing)}; pass an object "
                    "with encode(images) and decode(latents) (e.g. diffusers.AutoencoderKL), or "
                    "encoder=... and decoder=... callables."
                )
            encoder = encoder if encoder is not None else vae.encode
            decoder = decoder if decoder is not None else vae.decode
        if encoder is None or decoder is None:
            raise TypeError(
                "Pass either vae=<object with encode/decode> or both encoder= and decoder= callables."
            )
        if not callable(encoder) or not callable(decoder):
            raise TypeError(
                "encoder and decoder must be callable (images -> latents, latents -> images)."
            )
        self.vae = vae
        self._encoder = encoder
        self._decoder = decoder
        self.sample_posterior = bool(sample_posterior)

    def modules(self) -> list[torch.nn.Module]:
        """The nn.Modules behind the callables (used for device checks)."""
        found = []
        for obj in (
            self.vae,
            self._encoder,
            self._decoder,
            getattr(self._encoder, "__self__", None),
        ):
            if isinstance(obj, torch.nn.Module) and all(obj is not m for m in found):
                found.append(obj)
        return found

    def device(self) -> torch.device | None:
        """Device of the first parameter of the VAE's modules, or None when unknown."""
        for module in self.modules():
            for p in module.parameters():
                return p.device
        return None

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, C, H, W) -> latents (B, ...) (posterior mean unless ``sample_posterior``)."""
        return self._latents_from(self._encoder(images), generator)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, ...) -> images (B, C, H, W)."""
        out = self._decoder(latents)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = getattr(out, "sample", out)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"The decoder returned {type(out).__name__}; expected a tensor or an object with a "
                "`.sample` tensor (diffusers DecoderOutput)."
            )
        return out

    def _latents_from(self, out: Any, generator: torch.Generator | None) -> Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        for attr in ("latent_dist", "latents", "latent"):
            if hasattr(out, attr) and not isinstance(out, Tensor):
                out = getattr(out, attr)
                break
        if isinstance(out, Tensor):
            return out
        if hasattr(out, "mean") and hasattr(out, "sample"):  # a Gaussian posterior
            if self.sample_posterior:
                return (
                    out.sample(generator=generator)
                    if _accepts_generator(out.sample)
                    else out.sample()
                )
            return out.mean
        raise TypeError(
            f"Cannot read latents from the encoder output of type {type(out).__name__}; return a "
            "tensor, a posterior with .mean/.sample(), or an object with .latent_dist / .latents / "
            ".latent, or pass encoder=<callable returning a tensor>."
        )


def _accepts_generator(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
