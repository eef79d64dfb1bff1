"""What every framework adapter shares: argument checks, finding the VAE, naming logged keys.

Framework-free, so the adapters keep only the translation of their framework's hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ifid_callback.monitor import BOOKKEEPING_KEYS, IFIDMonitor

__all__ = ["check_adapter_arguments", "find_vae", "logged_metrics"]

VAE_KEYS = ("vae", "encoder", "decoder")


def check_adapter_arguments(owner: str, monitor: Any, monitor_kwargs: Mapping[str, Any]) -> None:
    """Validate an adapter's ``monitor=`` / ``**monitor_kwargs`` pair."""
    if monitor is not None and not isinstance(monitor, IFIDMonitor):
        raise TypeError(f"monitor must be an IFIDMonitor or None, got {type(monitor).__name__}.")
    if monitor is not None and monitor_kwargs:
        raise ValueError(
            f"Pass either a ready monitor or IFIDMonitor arguments, not both (got monitor and "
            f"{sorted(monitor_kwargs)})."
        )
    if monitor is None and "eval_images" not in monitor_kwargs:
        raise ValueError(
            f"{owner} needs evaluation images: pass eval_images=<(N, C, H, W) tensor or Dataset> "
            "(or a ready monitor=IFIDMonitor(...))."
        )


def build_monitor(monitor_kwargs: Mapping[str, Any], model: Any, owner: str) -> IFIDMonitor:
    """An :class:`IFIDMonitor` from an adapter's arguments; the VAE found on ``model`` if absent."""
    kwargs = dict(monitor_kwargs)
    if not any(kwargs.get(k) is not None for k in VAE_KEYS):
        kwargs["vae"] = find_vae(model, owner)
    return IFIDMonitor(**kwargs)


def knows_vae(monitor_kwargs: Mapping[str, Any]) -> bool:
    """Whether the arguments name the VAE (then the monitor can be built before training)."""
    return any(monitor_kwargs.get(k) is not None for k in VAE_KEYS)


def find_vae(model: Any, owner: str) -> Any:
    """``model.vae``, or the model itself when it has ``encode``/``decode`` (DDP unwrapped)."""
    model = getattr(model, "module", model)
    vae = getattr(model, "vae", None)
    if vae is not None:
        return vae
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return model
    raise ValueError(
        f"{owner} cannot find the VAE of {type(model).__name__}: give the model a `vae` "
        "attribute or encode()/decode() methods, or pass vae= (or encoder=/decoder=)."
    )


def logged_metrics(
    result: Mapping[str, float], prefix: str = "val/", names: Mapping[str, str] | None = None
) -> dict[str, float]:
    """The numbers of an evaluation under their logged names: ``prefix + name``.

    Every metric entry of ``result`` is kept (``ifid``, ``rfid`` and whatever else the metric
    computes, with the suffixes of extra weights such as ``ifid_ema``); the bookkeeping entries
    (``step``, ``bank_size``, ``num_eval_images``) are not. ``names`` renames a metric and its
    suffixed variants: ``{"ifid": "iFID"}`` logs ``ifid_ema`` as ``iFID_ema``.
    """
    names = dict(names or {})
    out = {}
    for key, value in result.items():
        if key in BOOKKEEPING_KEYS:
            continue
        base, sep, rest = key.partition("_")
        name = names.get(key) or (names[base] + sep + rest if base in names else key)
        out[f"{prefix}{name}"] = float(value)
    return out
