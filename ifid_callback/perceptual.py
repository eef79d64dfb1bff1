"""LPIPS of reconstructions: the distance network (the user's, or the standard one from local
files only) and its per-image distances.

Nothing here downloads: the standard LPIPS (AlexNet, v0.1 linear layers, from the ``lpips``
package) is built only when the package is installed and the AlexNet backbone weights are already
in the torch hub cache; otherwise the error says how to make them available.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["lpips_distances", "resolve_lpips", "standard_lpips", "standard_lpips_files"]

# torchvision's AlexNet weights, which lpips.LPIPS(net="alex") loads through the torch hub cache.
_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
_BACKBONE_URL = f"https://download.pytorch.org/models/{_BACKBONE_FILE}"


def standard_lpips_files() -> dict[str, Path | None]:
    """Where the standard LPIPS's files are looked for, without importing or downloading.

    Returns:
        ``{"package": the installed lpips package's folder or None, "linear": its v0.1 AlexNet
        linear-layer weights (shipped with the package) or None, "backbone": the AlexNet weights'
        path in the torch hub cache (which may not exist)}``.
    """
    spec = importlib.util.find_spec("lpips")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    package = Path(folders[0]) if folders else None
    linear = package / "weights" / "v0.1" / "alex.pth" if package is not None else None
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILE
    return {"package": package, "linear": linear, "backbone": backbone}


def standard_lpips(input_range: tuple[float, float]) -> nn.Module:
    """The standard LPIPS (``lpips.LPIPS(net="alex")``, v0.1) from local files, taking images in
    ``input_range`` (rescaled to LPIPS's [-1, 1]).

    Raises:
        FileNotFoundError: the ``lpips`` package or the AlexNet weights are not available locally;
            the message says how to provide them (nothing is downloaded).
    """
    files = standard_lpips_files()
    missing = []
    if files["package"] is None:
        missing.append("install the `lpips` package (`pip install lpips`; it needs torchvision)")
    elif files["linear"] is None or not files["linear"].is_file():
        missing.append(f"reinstall `lpips`: its linear-layer weights {files['linear']} are absent")
    if files["backbone"] is None or not files["backbone"].is_file():
        missing.append(
            f"place torchvision's AlexNet weights ({_BACKBONE_URL}) at {files['backbone']}"
        )
    if missing:
        raise FileNotFoundError(
            "lpips=True builds the standard LPIPS (AlexNet, v0.1) from local files only and "
            "never downloads. To enable it: "
            + "; ".join(missing)
            + ". Or pass lpips=<module> taking (reconstructions, images) in input_range to (B,) "
            "distances, e.g. lpips.LPIPS(net='alex') built from your own weights."
        )
    import lpips  # noqa: PLC0415  (optional; checked above)

    return _RescaledLPIPS(lpips.LPIPS(net="alex", verbose=False), input_range)


class _RescaledLPIPS(nn.Module):
    """An LPIPS network (inputs in [-1, 1]) taking images in ``input_range``."""

    def __init__(self, net: nn.Module, input_range: tuple[float, float]) -> None:
        super().__init__()
        self.net = net
        self.low, self.high = (float(v) for v in input_range)

    def forward(self, reconstructions: Tensor, images: Tensor) -> Tensor:
        scale = 2.0 / (self.high - self.low)
        return self.net(
            (reconstructions - self.low) * scale - 1.0, (images - self.low) * scale - 1.0
        )


def resolve_lpips(
    lpips: bool | nn.Module | Callable[[Tensor, Tensor], Tensor] | None,
    input_range: tuple[float, float],
) -> nn.Module | Callable[[Tensor, Tensor], Tensor] | None:
    """The LPIPS network the metric runs: None (off) for None/False, the standard one from local
    files for True (see :func:`standard_lpips`), or the given module or callable.

    Raises:
        TypeError: any other value.
    """
    if lpips is None or lpips is False:
        return None
    if lpips is True:
        return standard_lpips(input_range)
    if isinstance(lpips, nn.Module) or (callable(lpips) and not isinstance(lpips, type)):
        return lpips
    raise TypeError(
        f"lpips must be True, False, None or a module/callable taking (reconstructions, images) "
        f"to (B,) distances, got {type(lpips).__name__}: {lpips!r}."
    )


def lpips_distances(
    net: Callable[[Tensor, Tensor], Any], reconstructions: Tensor, images: Tensor
) -> Tensor:
    """The sum over the batch of ``net``'s per-image distances, float64 0-d.

    ``net`` runs in eval mode (LPIPS's linear layers have dropout) and without gradients.

    Args:
        net: maps (B, C, H, W) reconstructions and images to (B,) or (B, 1, 1, 1) distances.
        reconstructions, images: (B, C, H, W), same dtype and device.

    Raises:
        ValueError: the output is not a tensor of B values, or is not finite.
    """
    batch = images.shape[0]
    was_training = isinstance(net, nn.Module) and net.training
    if was_training:
        net.eval()
    try:
        with torch.no_grad():
            out = net(reconstructions, images)
    finally:
        if was_training:
            net.train()
    if not isinstance(out, Tensor) or out.numel() != batch or (out.ndim and out.shape[0] != batch):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the lpips network must return one distance per image, shape ({batch},) or "
            f"({batch}, 1, 1, 1), got {got}."
        )
    out = out.detach().reshape(batch).to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the lpips network returned NaN or Inf; check its weights and inputs.")
    return out.sum()
