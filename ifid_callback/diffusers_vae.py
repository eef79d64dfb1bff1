"""Drive diffusers VAEs (AutoencoderKL, AutoencoderTiny, AutoencoderDC, VQModel) with no glue.

Two pieces a training monitor needs beyond :class:`ifid_callback.vae.VAEAdapter`:
``vae_callables`` wraps ``encode``/``decode`` so that half-precision VAEs take float32 images and
return float32 images, and ``latent_hook_point`` finds the sub-module whose forward output
carries the latents during a training step (so a forward hook can collect them for free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.vae import module_dtype

__all__ = ["latent_hook_point", "vae_callables", "vae_dtype"]


def vae_dtype(vae: Any) -> torch.dtype | None:
    """Floating dtype of the VAE's parameters, or None when it has none (a plain callable)."""
    return module_dtype(vae)


class _CastingCall:
    """``fn(x.to(dtype))`` with tensor outputs (or their ``.sample``) cast back to float32.

    :class:`~ifid_callback.vae.VAEAdapter` does the same casting for any VAE whose weights it
    can see; these callables are for code that calls the VAE outside an adapter.
    """

    def __init__(self, fn: Callable[[Tensor], Any], dtype: torch.dtype, cast_output: bool) -> None:
        self.fn = fn
        self.dtype = dtype
        self.cast_output = cast_output
        # VAEAdapter finds the module behind a bound method through __self__ (device checks).
        self.__self__ = getattr(fn, "__self__", None)

    def __call__(self, x: Tensor) -> Any:
        out = self.fn(x.to(self.dtype))
        if not self.cast_output:
            return out
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = getattr(out, "sample", out)
        return out.float() if isinstance(out, Tensor) else out


def vae_callables(vae: Any) -> tuple[Callable[[Tensor], Any], Callable[[Tensor], Any]]:
    """``(encode, decode)`` callables for a VAE whose weights may be fp16/bf16.

    ``encode`` casts float32 images to the VAE's dtype and returns the VAE's raw output (a
    posterior, an output object or a tensor, read by :class:`~ifid_callback.vae.VAEAdapter`);
    ``decode`` casts latents to the VAE's dtype and returns float32 images (the ``.sample`` of a
    diffusers ``DecoderOutput``). Latents stay in the VAE's raw space: no ``scaling_factor``.

    Raises:
        TypeError: when ``vae`` has no callable ``encode``/``decode``.
    """
    missing = [m for m in ("encode", "decode") if not callable(getattr(vae, m, None))]
    if missing:
        raise TypeError(
            f"vae={type(vae).__name__} has no callable {' / '.join(missing)}; pass a VAE such as "
            "diffusers.AutoencoderKL, or encoder=... and decoder=... callables."
        )
    dtype = vae_dtype(vae) or torch.float32
    return _CastingCall(vae.encode, dtype, False), _CastingCall(vae.decode, dtype, True)


def latent_hook_point(vae: Any) -> tuple[nn.Module, Callable[[Any], Tensor]]:
    """The sub-module whose output holds the latents, and how to read them from it.

    * AutoencoderKL (and :class:`~ifid_callback.tiny_vae.TinyVAE`): ``quant_conv`` when present,
      else ``encoder``; its output is the posterior moments (B, 2C, h, w), of which the first C
      channels are the posterior mean.
    * VQModel: ``quant_conv`` (the pre-quantisation latents); AutoencoderTiny / AutoencoderDC:
      ``encoder`` (the latents themselves).

    Which case applies is read from the output's channel count against
    ``vae.config.latent_channels`` (2C: moments, C: latents), so other VAEs built the same way work.

    Returns:
        ``(module, transform)`` where ``transform(module_output) -> latents (B, C, h, w)``.

    Raises:
        TypeError: when the VAE has neither ``quant_conv`` nor ``encoder`` sub-module; pass
            ``encoder_module=`` and ``hook_transform=`` explicitly instead.
    """
    module = getattr(vae, "quant_conv", None)
    if not isinstance(module, nn.Module):
        module = getattr(vae, "encoder", None)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"Cannot find the encoder sub-module of {type(vae).__name__} (no quant_conv or "
            "encoder); pass encoder_module=<the nn.Module that outputs latents> and, if its "
            "output needs post-processing, hook_transform=<callable>."
        )
    config = getattr(vae, "config", None)
    latent_channels = getattr(config, "latent_channels", None)
    if latent_channels is None and isinstance(config, dict):
        latent_channels = config.get("latent_channels")

    def transform(output: Any) -> Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, Tensor):
            raise TypeError(
                f"The hooked module {type(module).__name__} returned {type(output).__name__}, "
                "not a tensor; pass hook_transform=<callable output -> latents>."
            )
        if latent_channels is None or output.ndim < 2:
            return output
        if output.shape[1] == 2 * latent_channels:  # Gaussian moments: [mean, logvar]
            return output[:, :latent_channels]
        if output.shape[1] == latent_channels:
            return output
        raise ValueError(
            f"The hooked module returned {output.shape[1]} channels; expected the latents "
            f"({latent_channels}) or the posterior moments ({2 * latent_channels}). Pass "
            "encoder_module= and hook_transform= explicitly."
        )

    return module, transform
