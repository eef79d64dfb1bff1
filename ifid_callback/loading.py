"""Load a VAE from a diffusers directory, a hub id or a Python factory path."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

_DIFFUSERS_CLASSES = ("AutoencoderKL", "AutoencoderTiny", "AutoencoderDC", "VQModel")


def load_vae(
    spec: str | os.PathLike, device: torch.device | str = "cpu", subfolder: str | None = None
) -> Any:
    """Load a VAE from ``spec``.

    Args:
        spec: ``"package.module:factory"`` (a callable returning the VAE, or a VAE object), a local
            diffusers directory as ``str`` or ``pathlib.Path`` (``config.json`` + weights, e.g.
            written by ``save_pretrained``), or a hub id such as ``"stabilityai/sd-vae-ft-mse"`` (downloaded by diffusers only
            because the user named it).
        device: where the VAE is put; it is set to eval mode.
        subfolder: diffusers subfolder (e.g. ``"vae"`` inside a pipeline repository).

    Returns:
        The VAE (an object with ``encode``/``decode``).
    """
    spec = os.fspath(spec)
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"Cannot import {attr!r} from {module_name!r} ({exc}); give 'package.module:factory'."
            ) from exc
        vae = obj() if callable(obj) and not hasattr(obj, "encode") else obj
    else:
        vae = _load_diffusers(spec, subfolder)
    if isinstance(vae, torch.nn.Module):
        vae = vae.to(device).eval()
    return vae


def _load_diffusers(spec: str, subfolder: str | None) -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError(
            f"Loading {spec!r} needs diffusers: pip install 'ifid-callback[diffusers]'."
        ) from exc
    path = Path(spec)
    config_dir = path / subfolder if subfolder else path
    class_name = "AutoencoderKL"
    if (config_dir / "config.json").is_file():
        import json

        class_name = json.loads((config_dir / "config.json").read_text()).get(
            "_class_name", class_name
        )
    elif path.exists():
        raise ValueError(f"{spec} has no config.json; point at a diffusers model directory.")
    if class_name not in _DIFFUSERS_CLASSES:
        raise ValueError(f"{spec} holds a {class_name}; expected one of {_DIFFUSERS_CLASSES}.")
    cls = getattr(diffusers, class_name)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    return cls.from_pretrained(spec, **kwargs)
