"""Checks of what users pass to the metric: images, ids and positions, and the warnings about
images that pass every check but are probably not what the user meant."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor


def check_images(
    images: Any,
    *,
    input_range: tuple[float, float],
    tolerance: float,
    channels: int | None,
    device: torch.device,
    vae_device: torch.device | None,
) -> float:
    """Raise a clear error for images the metric cannot take; returns their lowest value.

    Args:
        images: should be (B, C, H, W) float images in ``input_range`` (+- ``tolerance``).
        channels: the channel count of this round's earlier batches (None: first batch).
        device: the metric's device; ``vae_device``: the VAE's (None: unknown).
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a torch.Tensor, got {type(images).__name__}; convert them with "
            "torch.as_tensor(...) (shape (B, C, H, W), float, in input_range)."
        )
    if images.ndim != 4:
        hint = (
            "; add the batch dimension with images.unsqueeze(0)"
            if images.ndim == 3
            else "; stack single images into one (B, C, H, W) batch"
        )
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}{hint}.")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); skip empty batches.")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be floating point in input_range={input_range}, got "
            f"{images.dtype}; convert uint8 images with images.float() / 127.5 - 1."
        )
    # (B, H, W, C): a last axis of 1/3/4 channels behind two image-sized axes.
    if images.shape[-1] in (1, 3, 4) and min(images.shape[1:3]) > 4:
        raise ValueError(
            f"images of shape {tuple(images.shape)} look channels-last (B, H, W, C); the "
            "metric takes (B, C, H, W): use images.permute(0, 3, 1, 2)."
        )
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"images have {images.shape[1]} channels but earlier batches of this round had "
            f"{channels}; pass images of one channel count per round (reset() starts a "
            "new round)."
        )
    if images.device != device:
        raise ValueError(
            f"images are on {images.device} but the metric is on {device}; move the metric "
            f"with metric.to({str(images.device)!r})."
        )
    if vae_device is not None and vae_device != images.device:
        raise ValueError(
            f"images are on {images.device} but the VAE is on {vae_device}; move the VAE "
            f"(vae.to({str(images.device)!r})) or the images and the metric to {vae_device}."
        )
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise ValueError(
            f"images contain NaN or Inf ({bad} of {images.shape[0]} images); fix or drop those "
            "images (check the data loading and normalisation) before update()."
        )
    low, high = input_range
    lo, hi = float(images.min()), float(images.max())
    if lo < low - tolerance or hi > high + tolerance:
        raise ValueError(
            f"images span [{lo:.4g}, {hi:.4g}] but input_range is {input_range}; rescale "
            "them (e.g. x * 2 - 1 for [0, 1] images) or set input_range."
        )
    return lo


def as_ids(name: str, values: Any, batch: int) -> Tensor | None:
    """(B,) int64 CPU tensor of per-image ids or positions, or None."""
    if values is None:
        return None
    values = torch.as_tensor(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(
            f"{name} must be integers (int64), got {values.dtype}; convert with {name}.long()."
        )
    values = values.reshape(-1).to("cpu", torch.long)
    if values.numel() != batch:
        raise ValueError(
            f"got {values.numel()} {name} for {batch} images; pass one per image, shape ({batch},)."
        )
    return values


def warn_if_only_upper_half(input_range: tuple[float, float], lowest: float) -> None:
    """Images in [0, 1] fit inside the default (-1, 1) and pass every check, but the VAE and
    the features then see them shifted and compressed. A whole round of images without one
    value below 0 (``lowest``) is the mark of that mistake (natural images have dark pixels)."""
    low, high = input_range
    if low < 0 < high and lowest >= 0:
        warnings.warn(
            f"No image of this round has a value below 0, but input_range is "
            f"{input_range}: images in [0, 1] (e.g. from ToTensor) must be rescaled with "
            "x * 2 - 1, or pass input_range=(0, 1). If your images really are that bright, "
            "ignore this warning.",
            UserWarning,
            stacklevel=5,  # the caller of compute(), through torchmetrics' wrapper
        )


def check_latents_fit_bank(
    image_size: tuple[int, int], latent_shape: tuple[int, ...], bank_shape: tuple[int, ...] | None
) -> None:
    """Latents of another shape than the bank's: say whether the image size is the cause."""
    if bank_shape is None or bank_shape == latent_shape:
        return
    raise ValueError(
        f"images of size {image_size[0]}x{image_size[1]} give latents of shape {latent_shape} "
        f"but the bank holds latents of shape {bank_shape}: evaluate images of the size "
        "(and channels) the bank's latents were made from (resize or crop them), or fill the "
        "bank with this VAE's latents of images like these."
    )
