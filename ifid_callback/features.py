"""The feature extractor a metric uses: a feature spec resolved to a module, and its dimension.

:func:`resolve_feature` turns ``"inception"`` into the process' shared FID Inception
(``ifid_callback.feature_share``) with the requested preprocessing, and passes a user's
``nn.Module`` through; :func:`feature_dim` tells the dimension of its features.

The Inception pieces live in their own modules and are re-exported here, where they have always
been importable from: ``InceptionFeatures`` (``ifid_callback.inception``),
``load_inception_state_dict`` (``ifid_callback.inception_weights``), ``tf1_bilinear_resize`` and
``INCEPTION_SIZE`` (``ifid_callback.preprocessing``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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
            ``InceptionFeatures``, see ``ifid_callback.feature_share``), or any
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
        raise ValueError(
            f"Unknown feature {feature!r}: use 'inception' (standard FID) or pass an nn.Module "
            "that maps (B, C, H, W) images to (B, d) features."
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
