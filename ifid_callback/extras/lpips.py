"""LPIPS of the reconstructions against the query images, from the decode done for rFID."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ifid_callback.extras.base import Extra, PairedRows, count, scalar_sum
from ifid_callback.perceptual import lpips_distances


class PerceptualDistance(Extra):
    """``"lpips"``: the per-image mean LPIPS of the reconstructions.

    Args:
        net: a module or callable (reconstructions, images) -> (B,) distances, both in the
            metric's input range (see :func:`ifid_callback.perceptual.resolve_lpips`). A module
            is a child, so it moves with the metric; its weights stay out of ``state_dict``.
    """

    key = "lpips"
    scores_reconstructions = True

    def __init__(self, net: torch.nn.Module | Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.net = net

    def states(self) -> dict[str, Tensor]:
        return {"recon_lpips_sum": scalar_sum(), "recon_lpips_scored": count()}

    def score(self, reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
        total = lpips_distances(self.net, reconstructions.to(images.dtype), images)
        n = torch.tensor(images.shape[0], dtype=torch.long, device=images.device)
        return {"recon_lpips_sum": total, "recon_lpips_scored": n}

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        scored = int(state["recon_lpips_scored"])
        return {"lpips": state["recon_lpips_sum"] / scored} if scored > 0 else {}

    @property
    def name(self) -> Any:
        net = getattr(self.net, "net", self.net)  # the standard LPIPS inside its range wrapper
        if isinstance(net, torch.nn.Module):
            return type(net).__name__
        return getattr(net, "__name__", type(net).__name__)
