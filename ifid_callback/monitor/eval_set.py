"""The fixed evaluation images of a training run: chosen once, checked against the VAE, batched."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.evaluate import images_of
from ifid_callback.monitor.schedule import is_int

__all__ = ["EvalImages"]


class EvalImages:
    """A seeded subset of evaluation images, held as a CPU tensor or read from a Dataset.

    Args:
        images: a (N, C, H, W) tensor in ``input_range``, or a sized Dataset whose items are images
            or tuples/dicts holding one (``pixel_values``, ``images``, ...).
        num: how many to use (default: all); at least 2.
        seed: seeds the choice of the subset.
        input_range: (low, high) value range the images must lie in (within ``tolerance``).
        tolerance: how far outside ``input_range`` the images may stray.
        batch_size: images per yielded batch.
        num_features: dimension of the feature network (warns when ``num`` is smaller).
    """

    def __init__(
        self,
        images: Tensor | torch.utils.data.Dataset,
        num: int | None,
        *,
        seed: int,
        input_range: tuple[float, float],
        tolerance: float,
        batch_size: int,
        num_features: int,
    ) -> None:
        if isinstance(images, Tensor):
            if images.ndim != 4:
                raise ValueError(
                    f"eval_images must be a (N, C, H, W) tensor, got shape {tuple(images.shape)}."
                )
            total = images.shape[0]
        elif isinstance(images, torch.utils.data.Dataset) and hasattr(images, "__len__"):
            total = len(images)
        else:
            raise TypeError(
                "eval_images must be a (N, C, H, W) tensor or a sized torch Dataset of images, "
                f"got {type(images).__name__}."
            )
        if num is None:
            num = total
        if not is_int(num) or num < 2:
            raise ValueError(
                f"iFID needs at least 2 evaluation images (FID compares two covariances); got "
                f"num_eval_images={num!r} from an evaluation set of {total}. Pass more images."
            )
        if num > total:
            raise ValueError(
                f"num_eval_images={num} but eval_images holds only {total} images; lower "
                "num_eval_images or pass more images."
            )
        self.batch_size = batch_size
        self.input_range = input_range
        g = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(total, generator=g)[:num] if num < total else torch.arange(total)
        self.indices = chosen.sort().values
        self.num = num
        if isinstance(images, Tensor):
            self.tensor: Tensor | None = images[self.indices].detach().cpu()
            self.dataset = None
            first = self.tensor[:1]
        else:
            self.tensor = None
            self.dataset = images
            first = self._load([int(self.indices[0])])
        if not first.is_floating_point():
            raise TypeError(
                f"eval_images must be floating point in input_range={input_range}, got "
                f"{first.dtype}; convert uint8 images with images.float() / 127.5 - 1."
            )
        low, high = input_range
        check = self.tensor if self.tensor is not None else first
        lo, hi = float(check.min()), float(check.max())
        if lo < low - tolerance or hi > high + tolerance:
            raise ValueError(
                f"eval_images span [{lo:.4g}, {hi:.4g}] but input_range is {input_range}; "
                "rescale them (e.g. x * 2 - 1 for [0, 1] images) or set input_range."
            )
        self.shape = tuple(first.shape[1:])
        self.probe = first[:1].clone()
        self.latent_shape: tuple[int, ...] | None = None
        if num < num_features:
            warnings.warn(
                f"{num} evaluation images but the features are {num_features}-dimensional: the "
                f"covariance of the evaluation set has rank < {num_features}, so iFID/rFID are "
                f"biased and noisier. Use at least {num_features} evaluation images for numbers "
                "comparable with published FIDs.",
                UserWarning,
                stacklevel=3,
            )
        digest = hashlib.sha1(self.indices.numpy().tobytes())
        digest.update(repr((total, self.shape)).encode())
        digest.update(repr(round(float(check.double().sum()), 6)).encode())
        #: Identifies the chosen images: cached real statistics are valid for this value only.
        self.fingerprint = digest.hexdigest()

    # ------------------------------------------------------------------ reading
    def batches(self, rank: int = 0, world: int = 1) -> Iterator[Tensor]:
        """This rank's share (every ``world``-th image from ``rank``), in batches."""
        positions = list(range(rank, self.num, world))
        for start in range(0, len(positions), self.batch_size):
            part = positions[start : start + self.batch_size]
            if self.tensor is not None:
                yield self.tensor[part]
            else:
                yield self._load([int(self.indices[p]) for p in part])

    def first(self, rows: int) -> Tensor:
        """The first ``rows`` evaluation images (all of them when fewer)."""
        parts, have = [], 0
        for batch in self.batches(0, 1):
            parts.append(batch)
            have += batch.shape[0]
            if have >= rows:
                break
        return torch.cat(parts)[:rows]

    def _load(self, positions: list[int]) -> Tensor:
        items = []
        for i in positions:
            item = self.dataset[i]
            if isinstance(item, Mapping) or isinstance(item, (tuple, list)):
                item = images_of(item)
            if not isinstance(item, Tensor) or item.ndim != 3:
                raise TypeError(
                    f"eval_images[{i}] gave {type(item).__name__}"
                    f"{tuple(item.shape) if isinstance(item, Tensor) else ''}; items must be "
                    "(C, H, W) image tensors, or tuples/dicts holding one."
                )
            items.append(item)
        return torch.stack(items)

    # ------------------------------------------------------------------ checks
    def check_vae(
        self,
        encode: Callable[[Tensor], Any],
        decode: Callable[[Tensor], Tensor],
        device: torch.device,
        vae_modules: list[nn.Module],
    ) -> tuple[int, ...]:
        """One encode/decode round trip of an evaluation image: does the VAE take these images?

        The caller runs this under no_grad with the VAE in eval mode. Returns (and remembers) the
        per-image latent shape of the evaluation images.
        """
        x = self.probe.to(device, torch.float32)
        try:
            z = encode(x)
            out = decode(z)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(self._mismatch_message(exc, vae_modules)) from exc
        if not isinstance(z, Tensor) or z.ndim < 2:
            raise ValueError(
                f"The VAE's encoder returned {type(z).__name__} for an evaluation image; it must "
                "return latents (B, ...) or a posterior (see VAEAdapter)."
            )
        if tuple(out.shape[1:]) != self.shape:
            raise ValueError(
                f"The VAE turns evaluation images of shape {self.shape} (C, H, W) into "
                f"reconstructions of shape {tuple(out.shape[1:])}: their size is not one the VAE "
                "reproduces (e.g. not a multiple of its downsampling factor). Give evaluation "
                "images of the training images' size."
            )
        self.latent_shape = tuple(z.shape[1:])
        return self.latent_shape

    def _mismatch_message(self, exc: Exception, vae_modules: list[nn.Module]) -> str:
        channels, height, width = (self.shape + (0, 0, 0))[:3]
        full = (self.num, *self.shape)
        takes = _vae_in_channels(vae_modules)
        if width in (1, 3, 4) and channels not in (1, 3, 4) and takes in (None, width):
            return (
                f"eval_images have shape {full}, which looks channels-last (N, H, W, C); the VAE "
                f"takes channels-first images (N, C, H, W): pass images.permute(0, 3, 1, 2)."
            )
        if takes is not None and channels != takes:
            if channels == 1:
                return (
                    f"eval_images are grayscale (1 channel, shape {full}) but the VAE takes "
                    f"{takes} channels: repeat the channel (images.repeat(1, {takes}, 1, 1)) or "
                    "give images like the training images."
                )
            return (
                f"eval_images have {channels} channels (shape {full}) but the VAE takes {takes} "
                "channels: give evaluation images like the training images (N, C, H, W)."
            )
        return (
            f"The VAE could not encode and decode an evaluation image of shape {self.shape} "
            f"(C, H, W): {type(exc).__name__}: {exc}. Give evaluation images like the training "
            "images: (N, C, H, W), the same channels and size, in input_range."
        )

    def check_training_latents(self, shape: tuple[int, ...]) -> None:
        """Training latents of ``shape`` (per image) must be comparable with the evaluation
        images' latents: otherwise the evaluation images are not like the training images, or
        the training step hands over something else than the VAE's latents."""
        ours = self.latent_shape
        if ours is None or math.prod(shape) == math.prod(ours):
            return
        size = f"{self.shape[-2]}x{self.shape[-1]}"
        start = (
            f"Training latents have shape {tuple(shape)} per image but the {size} evaluation "
            f"images encode to {ours}"
        )
        if len(shape) == len(ours) >= 3 and shape[0] == ours[0]:
            # Same latent channels, another latent map: the images differ in size.
            h = self.shape[-2] * shape[-2] // max(ours[-2], 1)
            w = self.shape[-1] * shape[-1] // max(ours[-1], 1)
            raise ValueError(
                f"{start}: the evaluation images are not the size of the training images (about "
                f"{h}x{w}). Give eval_images of the training images' size (resize or crop them)."
            )
        raise ValueError(
            f"{start}: the latents given to observe() are not what the VAE's encoder returns "
            "(e.g. moments instead of the posterior mean, or another latent layout), or the "
            "evaluation images differ from the training images. Hand over the encoder's "
            "latents (posterior.mean) and evaluation images like the training images."
        )


def _vae_in_channels(modules: list[nn.Module]) -> int | None:
    """Input channels of the VAE's first convolution (its encoder's input), when it has one."""
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d):
                return int(module.in_channels)
    return None
