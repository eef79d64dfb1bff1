"""gFID of a probe (samples decoded through the VAE) and gFID(t) (held-out latents noised to ``t``
and integrated back to 0), with the same feature extractor as iFID and rFID.

Features are kept (not only their statistics) because the Image Retrieval Score needs them and
because a cached feature file lets a study recompute any FID without decoding again. The FID
itself is :func:`~ifid_callback.probes.fid.fid_from_features`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .fid import fid_from_features
from .trained_probe import TrainedProbe

__all__ = [
    "extract_features",
    "fid_from_features",  # defined in .fid, kept importable from here
    "generated_features",
    "gfid",
    "gfid_t",
    "regenerated_features",
    "resolve_study_feature",
    "ResizedInception",
]


class ResizedInception(nn.Module):
    """FID Inception-v3 pool3 features of images resized to ``size`` instead of 299 (not FID).

    The standard pipeline (clamp, 0..255 with rounding, TF1 bilinear resize, ``(x - 128) / 128``)
    with a smaller resize, for machines where 299x299 Inception passes are the bottleneck:
    ``size=96`` costs about a tenth of the standard pass. Distances in this space are *not*
    comparable with published FIDs; they rank image sets by the same network's features.

    Args:
        size: input side in pixels, at least 75 (the network's smallest valid input).
        input_range: value range of the images.
        precision: ``"fp32"`` or ``"bf16"``.
    """

    num_features: int = 2048

    def __init__(
        self, size: int, input_range: tuple[float, float] = (-1.0, 1.0), precision: str = "fp32"
    ) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 75:
            raise ValueError(f"size must be an int >= 75 (Inception's minimum input), got {size!r}")
        from ..inception import InceptionFeatures

        self.size = size
        self.net = InceptionFeatures(input_range=input_range, precision=precision)

    def forward(self, images: Tensor) -> Tensor:
        from ..preprocessing import tf1_bilinear_resize

        low, high = self.net.input_range
        x = images.to(dtype=torch.float32).clamp(low, high)
        x = torch.floor((x - low) * (255.0 / (high - low)) + 0.5)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (tf1_bilinear_resize(x, self.size) - 128.0) / 128.0
        with torch.inference_mode():
            features = self.net.forward_normalized(x)
        return features.clone()


def resolve_study_feature(
    feature: str | nn.Module, input_range: tuple[float, float] = (-1.0, 1.0)
) -> nn.Module:
    """The feature extractor of a study: one module for every FID it reports.

    Args:
        feature: ``"inception"`` (FID Inception-v3 pool3, fp32), ``"inception-bf16"`` (the same
            network under bfloat16 autocast, about twice as fast on CPUs with bf16 support),
            ``"inception@96"`` (the same network on images resized to 96 instead of 299:
            :class:`ResizedInception`, cheap but not comparable with published FIDs),
            ``"digits"`` (the penultimate layer of a small digit classifier, for 1x8x8 digits:
            :func:`~ifid_callback.probes.digit_features.digit_features`; not Inception FID),
            ``"package.module:factory"`` (a callable returning an ``nn.Module``, or the module
            itself), or an ``nn.Module`` mapping ``(B, C, H, W)`` images in ``input_range`` to
            ``(B, d)``.
        input_range: value range of the images given to the module.
    """
    if isinstance(feature, nn.Module):
        return feature.eval()
    if not isinstance(feature, str):
        raise TypeError(f"feature must be a string or an nn.Module, got {type(feature).__name__}")
    if feature == "digits":
        from .digit_features import digit_features

        return digit_features()
    if feature in ("inception", "inception-bf16"):
        from ..inception import InceptionFeatures

        precision = "bf16" if feature.endswith("bf16") else "fp32"
        return InceptionFeatures(input_range=input_range, precision=precision)
    if feature.startswith("inception@"):
        try:
            size = int(feature.partition("@")[2])
        except ValueError:
            raise ValueError(f"inception@<size> needs an integer size, got {feature!r}") from None
        return ResizedInception(size, input_range)
    module_name, sep, attr = feature.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"feature must be 'inception', 'inception-bf16' or 'package.module:factory', "
            f"got {feature!r}"
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {attr!r} from {module_name!r}: {exc}") from exc
    module = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(module, nn.Module):
        raise TypeError(f"{feature} gave a {type(module).__name__}, not an nn.Module")
    return module.eval()


@torch.no_grad()
def extract_features(
    batches: Iterable[Tensor],
    feature: nn.Module,
    *,
    device: torch.device | str = "cpu",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Features of a stream of image batches ``(B, C, H, W)``, as float32 ``(N, d)``.

    With ``out`` (e.g. a memory-mapped array of the right length) rows are written into it in
    order and ``out`` is returned; otherwise the batches' features are concatenated.
    """
    rows, filled = [], 0
    for images in batches:
        feats = feature(images.to(device)).float()
        if feats.ndim != 2 or feats.shape[0] != images.shape[0]:
            raise ValueError(
                f"the feature module must map (B, C, H, W) to (B, d); got {tuple(feats.shape)} "
                f"for a batch of {images.shape[0]}"
            )
        if not torch.isfinite(feats).all():
            raise ValueError("the feature module returned NaN or Inf")
        array = feats.cpu().numpy()
        if out is not None:
            out[filled : filled + len(array)] = array
        else:
            rows.append(array)
        filled += len(array)
    if out is not None:
        if filled != len(out):
            raise ValueError(f"expected {len(out)} feature rows, the batches gave {filled}")
        return out
    if not rows:
        raise ValueError("no images to extract features from")
    return np.concatenate(rows)


def _chunks(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def generated_features(
    probe: TrainedProbe,
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    num_samples: int,
    *,
    batch_size: int = 256,
    sampler: str = "euler",
    steps: int = 50,
    cfg_scale: float = 1.0,
    labels: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: np.ndarray | None = None,
    keep_images: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, Tensor | None]:
    """Sample ``num_samples`` latents from the probe, decode them and return their features.

    Batches of ``batch_size`` are sampled, decoded and featurised one at a time, so memory stays
    bounded for 50K samples. Noise comes from one CPU generator seeded with ``seed``.

    Returns:
        ``(features (num_samples, d) float32, images)`` where ``images`` holds the first
        ``keep_images`` decoded samples (CPU, in the decoder's range) or None.
    """
    generator = torch.Generator().manual_seed(seed)
    kept: list[Tensor] = []

    def batches() -> Iterable[Tensor]:
        from tqdm.auto import tqdm

        spans = list(_chunks(num_samples, batch_size))
        for start, stop in tqdm(spans, desc="gfid", disable=not progress, leave=False):
            z = probe.sample(
                stop - start,
                labels=None if labels is None else labels[start:stop],
                sampler=sampler,
                steps=steps,
                cfg_scale=cfg_scale,
                generator=generator,
            )
            images = _decode_checked(decode, z.to(device))
            if sum(len(k) for k in kept) < keep_images:
                kept.append(images[: keep_images - sum(len(k) for k in kept)].cpu())
            yield images

    feats = extract_features(batches(), feature, device=device, out=out)
    return feats, (torch.cat(kept) if kept else None)


def regenerated_features(
    probe: TrainedProbe,
    latents: Tensor | np.ndarray,
    t: float,
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    *,
    batch_size: int = 256,
    sampler: str = "euler",
    steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Features of held-out latents noised to ``t``, integrated back to 0 and decoded.

    ``latents`` ``(n, C, h, w)`` are in the VAE's space (a memory-mapped array is read one batch
    at a time). The Euler grid from ``t`` uses ``max(1, round(steps * t))`` intervals, so every
    ``t`` is integrated at the same step size as full sampling.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(latents)
    sub_steps = max(1, round(steps * float(t)))

    def batches() -> Iterable[Tensor]:
        from tqdm.auto import tqdm

        spans = list(_chunks(n, batch_size))
        for start, stop in tqdm(spans, desc=f"gfid(t={t:g})", disable=not progress, leave=False):
            z0 = torch.as_tensor(np.asarray(latents[start:stop]), dtype=torch.float32)
            z = probe.regenerate(
                z0, float(t), sampler=sampler, steps=sub_steps, generator=generator
            )
            yield _decode_checked(decode, z.to(device))

    return extract_features(batches(), feature, device=device, out=out)


def _decode_checked(decode: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    with torch.no_grad():
        images = decode(z)
    if not torch.isfinite(images).all():
        raise ValueError("the decoder returned NaN or Inf for probe samples")
    return images


def gfid(
    probe: TrainedProbe,
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    reference: np.ndarray | tuple[Tensor, Tensor] | str | os.PathLike,
    num_samples: int,
    **kwargs: Any,
) -> float:
    """gFID: FID between ``num_samples`` decoded probe samples and a reference.

    ``reference`` is real features ``(N, d)``, their ``(mu, sigma)``, or an ADM-style ``.npz``
    holding ``mu`` and ``sigma`` (e.g. a study's ``real/reference_stats.npz``, or an ADM
    reference batch computed with the same network); ``kwargs`` go to
    :func:`generated_features`.
    """
    if isinstance(reference, (str, os.PathLike)):
        from ..stats_cache import load_adm_npz

        reference = load_adm_npz(reference)
    feats, _ = generated_features(probe, decode, feature, num_samples, **kwargs)
    if isinstance(reference, tuple):
        return fid_from_features(feats, stats_b=reference)
    return fid_from_features(feats, reference)


def gfid_t(
    probe: TrainedProbe,
    latents: Tensor | np.ndarray,
    source_features: np.ndarray,
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    ts: Sequence[float],
    **kwargs: Any,
) -> dict[float, float]:
    """gFID(t) for each ``t``: FID between the regenerated images and their source images.

    ``source_features`` are the features of the images whose latents are ``latents`` (same
    order and count); ``kwargs`` go to :func:`regenerated_features`.
    """
    if len(source_features) != len(latents):
        raise ValueError(
            f"source_features ({len(source_features)}) and latents ({len(latents)}) must match"
        )
    return {
        float(t): fid_from_features(
            regenerated_features(probe, latents, t, decode, feature, **kwargs), source_features
        )
        for t in ts
    }
