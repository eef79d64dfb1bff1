"""One pass of the metric, as plain functions: encode, neighbours, pick, interpolate, decode, features.

Each function checks what it gets back from the user's networks (a VAE adapter, a feature
network) and raises a clear error naming the problem, so that the metric only accumulates what a
whole pass produced. Nothing here holds state: the reference (:class:`~ifid_callback.reference.
Reference`) owns the rows, the metric owns the sums.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.functional.channel_norm import candidate_mse
from ifid_callback.functional.interpolation import interpolate
from ifid_callback.functional.neighbors import pick_neighbor
from ifid_callback.network_cache import cached_features, is_network_cache
from ifid_callback.reference import Reference
from ifid_callback.vae import VAEAdapter


def encode(vae: VAEAdapter, images: Tensor, generator: Any = None) -> Tensor:
    """Latents (B, ...) of ``images`` (B, C, H, W); ``generator`` draws posterior samples."""
    z = vae.encode(images, generator=generator)
    if not isinstance(z, Tensor) or z.ndim < 2 or z.shape[0] != images.shape[0]:
        raise ValueError(
            f"The encoder must return one latent per image, shape (B, ...); got "
            f"{getattr(z, 'shape', type(z).__name__)} for {images.shape[0]} images; return "
            "the latents (or a posterior) batched like the images."
        )
    if not torch.isfinite(z).all():
        raise ValueError(
            "The encoder returned NaN or Inf latents; check the VAE's weights and inputs."
        )
    return z


def decode(
    vae: VAEAdapter,
    z: Tensor,
    channels: int | None,
    input_range: tuple[float, float],
    clamp: bool = True,
) -> Tensor:
    """Images (B, C, H, W) decoded from ``z``, clamped to ``input_range`` unless ``clamp`` is
    False (the authors' protocol feeds the features unclamped decodes)."""
    x = vae.decode(z)
    if x.ndim != 4 or x.shape[0] != z.shape[0]:
        raise ValueError(
            f"The decoder must return one image per latent, (B, C, H, W); got "
            f"{tuple(x.shape)} for {z.shape[0]} latents; return the decoded images batched "
            "(or a diffusers DecoderOutput)."
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"The decoder returns {x.shape[1]} channels but the images have {channels}; "
            "use a decoder that returns images like the encoder takes."
        )
    if not torch.isfinite(x).all():
        raise ValueError("The decoder returned NaN or Inf; check the VAE's weights.")
    return x.clamp(*input_range) if clamp else x


def features(
    net: nn.Module, images: Tensor, num_features: int, input_range: tuple[float, float]
) -> Tensor:
    """(B, d) float64 features of ``images``, checked; through a ``FeatureShare`` network's
    content-keyed cache when the metric sits in one."""
    f = cached_features(net, images) if is_network_cache(net) else net(images)
    if f.ndim != 2 or f.shape != (images.shape[0], num_features):
        raise ValueError(
            f"The feature network must return (B, {num_features}) = "
            f"({images.shape[0]}, {num_features}); got {tuple(f.shape)}; return one "
            "flat feature vector per image, and pass num_features= (or a num_features "
            "attribute) equal to its length."
        )
    if not torch.isfinite(f).all():
        raise ValueError(
            "The feature network returned NaN or Inf; check its weights and that it takes "
            f"images in input_range={input_range}."
        )
    return f.to(torch.float64)


def neighbor_latents(
    reference: Reference,
    z: Tensor,
    k: int,
    pick: str,
    exclude: Tensor | None = None,
    generator: Any = None,
) -> tuple[Tensor, Tensor]:
    """Nearest reference latent of each latent in ``z`` (one of k, picked when k > 1).

    Returns ``(z_nn, ids)``: neighbour latents shaped and typed like ``z``, and their (B,) ids.
    """
    z_nn, ids, _ = neighbor_rows(reference, z, k, pick, exclude, generator)
    return z_nn, ids


def neighbor_rows(
    reference: Reference,
    z: Tensor,
    k: int,
    pick: str,
    exclude: Tensor | None = None,
    generator: Any = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`neighbor_latents` and the (B,) int64 CPU insertion steps of the rows picked
    (``-1`` where unknown)."""
    dist, found = reference.search(z, k, exclude)
    choice = found[:, 0].cpu() if k == 1 else _pick(reference, z, dist, found, pick, generator)
    z_nn = reference.lookup(choice).to(z.device, z.dtype).reshape(z.shape)
    return z_nn, reference.ids_of(choice), reference.steps_of(choice)


def _pick(
    reference: Reference, z: Tensor, dist: Tensor, found: Tensor, pick: str, generator: Any
) -> Tensor:
    """One of the k candidates ``found`` (B, k) of each latent, by the rule ``pick``."""
    if pick != "softmax_mse":
        rule = "softmax" if pick == "softmax_distance" else "uniform"
        return pick_neighbor(dist.cpu(), found.cpu(), pick=rule, generator=generator)
    # The official weights: mean squared difference per latent element on the raw latents
    # (bn_channel: on the latents standardised with the reference's statistics).
    batch, k = found.shape
    flat = z.reshape(batch, 1, -1).to(torch.float32)
    candidates = reference.lookup(found.reshape(-1)).to(flat.device, torch.float32)
    candidates = candidates.reshape(batch, k, -1)
    if reference.statistics is not None:
        mse = candidate_mse(flat[:, 0], candidates, reference.statistics)
    else:
        mse = (candidates - flat).pow(2).mean(dim=2)
    return pick_neighbor(mse.cpu(), found.cpu(), pick="softmax", generator=generator)


def decode_batch(
    vae: VAEAdapter,
    z: Tensor,
    z_nn: Tensor | None,
    *,
    interpolation: str,
    alpha: float,
    generator: Any,
    with_recon: bool,
    channels: int | None,
    input_range: tuple[float, float],
    clamp: bool = True,
) -> Tensor:
    """Decode the reconstructions ``D(z)`` (with ``with_recon``) and the interpolants (with
    ``z_nn``) in one call of the decoder: (B or 2B, C, H, W), reconstructions first."""
    latents = [z] if with_recon else []
    if z_nn is not None:
        latents.append(interpolate(z, z_nn, interpolation, alpha, generator=generator))
    both = torch.cat(latents) if len(latents) > 1 else latents[0]
    return decode(vae, both, channels, input_range, clamp=clamp)
