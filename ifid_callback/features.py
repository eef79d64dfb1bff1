"""The feature extractors a metric uses: feature specs resolved to modules, and their dimension.

:func:`resolve_feature` turns ``"inception"`` into the process' shared FID Inception
(``ifid_callback.feature_share``) with the requested preprocessing, ``"dinov2"`` (or
``"dinov2-vitl14"``, ...) into :class:`~ifid_callback.dinov2.DINOv2Features` (local weights),
and passes a user's ``nn.Module`` through; :func:`split_features` and :func:`resolve_spaces`
handle several spaces (``feature=("inception", "dinov2")``); :func:`feature_dim` tells the
dimension of a module's features.

The Inception pieces live in their own modules and are re-exported here, where they have always
been importable from: ``InceptionFeatures`` (``ifid_callback.inception``),
``load_inception_state_dict`` (``ifid_callback.inception_weights``), ``tf1_bilinear_resize`` and
``INCEPTION_SIZE`` (``ifid_callback.preprocessing``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.dinov2 import DINOv2Features, dinov2_arch
from ifid_callback.feature_share import shared_inception
from ifid_callback.inception import InceptionFeatures
from ifid_callback.inception_weights import load_inception_state_dict
from ifid_callback.preprocessing import INCEPTION_SIZE, check_preprocessing, tf1_bilinear_resize

__all__ = [
    "INCEPTION_SIZE",
    "InceptionFeatures",
    "feature_dim",
    "load_inception_state_dict",
    "resolve_feature",
    "resolve_spaces",
    "space_name",
    "split_features",
    "tf1_bilinear_resize",
]


def resolve_feature(
    feature: str | nn.Module,
    input_range: tuple[float, float],
    preprocessing: str | None = None,
) -> nn.Module:
    """The feature extractor a metric should use.

    Args:
        feature: ``"inception"`` for the standard FID Inception (the process' shared
            ``InceptionFeatures``, see ``ifid_callback.feature_share``), ``"dinov2"`` (ViT-B/14)
            or ``"dinov2-vits14"``/``-vitb14``/``-vitl14``/``-vitg14`` for
            :class:`~ifid_callback.dinov2.DINOv2Features` (EDM2's FD_DINOv2 features, weights
            from ``$IFID_DINOV2_WEIGHTS`` or the Hugging Face cache; a new module), or any
            ``nn.Module`` mapping (B, C, H, W) images, exactly as the metric received them (float,
            in ``input_range``), to (B, d) features.
        input_range: ``(low, high)`` of the images the metric receives.
        preprocessing: how ``"inception"`` goes from images to the network: ``"standard"``
            (torch-fidelity's) or ``"official"`` (the iFID authors' ``evalvae.py``), see
            ``ifid_callback.preprocessing``. ``None`` (default): ``"standard"`` for
            ``"inception"``, and a module as given. A module does its own preprocessing: with an
            explicit ``preprocessing`` it must say it does that one (an ``InceptionFeatures``
            built with it), else ValueError; it is never silently ignored.

    Returns:
        The module (the given one unchanged, or the shared ``InceptionFeatures``).
    """
    if preprocessing is not None:
        check_preprocessing(preprocessing)
    if isinstance(feature, str):
        if feature.lower() == "inception":
            # One network per process and device for every metric that asks for it.
            return shared_inception(input_range, preprocessing=preprocessing or "standard")
        if feature.lower().startswith("dinov2"):
            arch = dinov2_arch(feature)
            if preprocessing is not None:
                raise ValueError(
                    f"preprocessing={preprocessing!r} applies to Inception; {feature!r} always "
                    "takes EDM2's FD_DINOv2 preprocessing. Drop preprocessing= (or preset=), or "
                    "pass feature=('inception', 'dinov2') to get both spaces."
                )
            return DINOv2Features(arch, input_range=input_range)
        raise ValueError(
            f"Unknown feature {feature!r}: use 'inception' (standard FID), 'dinov2' (FD_DINOv2, "
            "ViT-B/14; 'dinov2-vitl14' etc. for other sizes) or pass an nn.Module that maps "
            "(B, C, H, W) images to (B, d) features."
        )
    if isinstance(feature, nn.Module):
        own = getattr(feature, "preprocessing", None)
        if preprocessing is not None and own != preprocessing:
            raise ValueError(
                f"preprocessing={preprocessing!r} applies to feature='inception'; the "
                f"{type(feature).__name__} given does its own preprocessing"
                + (f" ({own!r})" if isinstance(own, str) else "")
                + ". Pass feature='inception', or leave preprocessing unset for your module."
            )
        return feature
    raise TypeError(
        f"feature must be 'inception' or an nn.Module mapping images to (B, d) features, got "
        f"{type(feature).__name__}. Wrap a plain function in an nn.Module."
    )


def split_features(feature: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(first, others)`` of a feature argument: one spec, or a tuple/list of specs whose first
    gives ``ifid``/``rfid`` and each other one ``ifid_<space>``/``rfid_<space>``."""
    if isinstance(feature, (tuple, list)):
        if not feature:
            raise ValueError("feature=() names no feature network; e.g. feature='inception'.")
        return feature[0], tuple(feature[1:])
    return feature, ()


def space_name(net: nn.Module) -> str:
    """The key suffix of a feature space: ``"inception"``, ``"dinov2"``, or a module's ``space``
    attribute; ValueError for a module without one."""
    net = getattr(net, "network", net)  # inside torchmetrics' FeatureShare (a NetworkCache)
    if isinstance(net, InceptionFeatures):
        return "inception"
    name = getattr(net, "space", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"A further feature space needs a name for its keys (ifid_<name>): give the "
            f"{type(net).__name__} a `space` attribute such as 'clip', or pass 'dinov2'."
        )
    return name


def resolve_spaces(
    specs: tuple[Any, ...], input_range: tuple[float, float], first: nn.Module
) -> dict[str, nn.Module]:
    """The further feature spaces of ``feature=(first, *specs)``: space name -> module, each
    spec resolved as :func:`resolve_feature` does (a string's own default preprocessing)."""
    taken = {getattr(getattr(first, "network", first), "space", None)}
    if isinstance(getattr(first, "network", first), InceptionFeatures):
        taken.add("inception")
    out: dict[str, nn.Module] = {}
    for spec in specs:
        net = resolve_feature(spec, input_range)
        name = space_name(net)
        if name in taken or name in out:
            raise ValueError(
                f"feature names the {name!r} space twice; give each feature space once, e.g. "
                "feature=('inception', 'dinov2')."
            )
        out[name] = net
    return out


def feature_dim(module: nn.Module, example_shape: tuple[int, ...]) -> int:
    """Dimension d of ``module``'s (B, d) features.

    Uses ``module.num_features`` when present; otherwise runs one forward pass on a zero batch of
    shape ``(1, *example_shape[1:])`` (e.g. ``example_shape=(B, C, H, W)`` of the images),
    without gradients and in eval mode (the module's mode is restored afterwards).
    """
    dim = getattr(module, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    params = next(iter(module.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dummy = torch.zeros((1, *tuple(example_shape)[1:]), device=device)
    was_training = module.training
    module.eval()  # e.g. BatchNorm cannot run in train mode on a batch of one
    try:
        with torch.no_grad():
            out = module(dummy)
    finally:
        module.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"The feature module must return (B, d) features; on a (1, ...) input it returned "
            f"{got}. Flatten its output, e.g. end it with nn.Flatten()."
        )
    return int(out.shape[1])
