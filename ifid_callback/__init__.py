"""Interpolated FID (iFID) for the VAEs of latent diffusion: metric, training callbacks, probes.

``InterpolatedFID`` computes iFID and rFID of a VAE in one pass; ``LatentBank`` holds the
reference latents; ``IFIDMonitor`` schedules both during training; framework adapters live in
``ifid_callback.integrations`` and the gFID probe study in ``ifid_callback.probes``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "InterpolatedFID": "ifid_callback.metric",
    "LatentBank": "ifid_callback.bank",
    "NeighborIndex": "ifid_callback.index",
    "VAEAdapter": "ifid_callback.vae",
    "InceptionFeatures": "ifid_callback.inception",
    "DINOv2Features": "ifid_callback.dinov2",
    "evaluate_vae": "ifid_callback.evaluate",
    "IFIDMonitor": "ifid_callback.monitor",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import ifid_callback` stays cheap and optional extras are imported on first use.
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ifid_callback' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
