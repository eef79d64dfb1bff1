"""The metric's opt-in extras, one small part each (see :mod:`ifid_callback.extras.base`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.extras.equivariance import ScaleEquivariance
from ifid_callback.extras.kid import KernelDistance
from ifid_callback.extras.latent_spectrum import LatentSpectrum
from ifid_callback.extras.lpips import PerceptualDistance
from ifid_callback.extras.precision_recall import ManifoldPrecisionRecall
from ifid_callback.extras.reconstruction import ReconstructionScores
from ifid_callback.extras.uncertainty import StandardErrors
from ifid_callback.perceptual import resolve_lpips

__all__ = ["Extra", "PairedRows", "build_extras"]


def build_extras(
    switches: Mapping[str, bool],
    lpips: bool | nn.Module | Callable[[Tensor, Tensor], Tensor] | None,
    input_range: tuple[float, float],
    seed: int,
    compute_rfid: bool,
    spaces: Mapping[str, nn.Module] | None = None,
) -> nn.ModuleDict:
    """The extras that are on, in the order their results are reported.

    Args:
        switches: ``{"uncertainty", "reconstruction_metrics", "kid", "precision_recall"}``
            booleans (the metric's arguments of those names), optionally ``"latent_spectrum"``
            and ``"equivariance"`` (off when absent).
        lpips: the metric's ``lpips`` argument (see :func:`~ifid_callback.perceptual.resolve_lpips`).
        input_range: (low, high) of the images.
        seed: the metric's seed (KID's subsets).
        compute_rfid: whether reconstructions are decoded (their scores need them).
        spaces: further feature spaces, name -> network (``{"dinov2": DINOv2Features(...)}``):
            ``ifid_<name>``/``rfid_<name>`` from the same decodes, reported first.
    """
    extras: dict[str, Any] = {}
    if spaces:
        # Imported here: the module reads the FID sums' helpers, which import this package.
        from ifid_callback.extras.feature_space import FeatureSpaceFID

        for name, net in spaces.items():
            extras[f"fid_{name}"] = FeatureSpaceFID(name, net, input_range, compute_rfid)
    if switches["reconstruction_metrics"] and compute_rfid:
        extras["reconstruction"] = ReconstructionScores(input_range)
    net = resolve_lpips(lpips, input_range)
    if net is not None:
        extras["lpips"] = PerceptualDistance(net)
    if switches["uncertainty"]:
        extras["uncertainty"] = StandardErrors()
    if switches["kid"]:
        extras["kid"] = KernelDistance(seed)
    if switches["precision_recall"]:
        extras["precision_recall"] = ManifoldPrecisionRecall()
    if switches.get("latent_spectrum", False):
        extras["latent_spectrum"] = LatentSpectrum()
    if switches.get("equivariance", False):
        extras["equivariance"] = ScaleEquivariance()
    return nn.ModuleDict(extras)
