"""The monitor's metric: its pass-through options checked and the InterpolatedFID built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ifid_callback.metric import InterpolatedFID

__all__ = ["METRIC_OPTIONS", "build_metric", "check_extra_vaes", "check_metric_options"]

# The metric's extras a monitor passes through (``metric_options``).
METRIC_OPTIONS = (
    "uncertainty",
    "reconstruction_metrics",
    "kid",
    "precision_recall",
    "lpips",
    "latent_spectrum",
    "equivariance",
)


def check_metric_options(metric_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metric_options`` as a dict, refused when it names anything but :data:`METRIC_OPTIONS`."""
    metric_options = dict(metric_options or {})
    unknown = set(metric_options) - set(METRIC_OPTIONS)
    if unknown:
        raise ValueError(
            f"metric_options takes {list(METRIC_OPTIONS)}, got {sorted(unknown)}; the other "
            "metric settings are the monitor's own arguments."
        )
    return metric_options


def check_extra_vaes(extra_vaes: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra_vaes`` as a dict, its names checked (they become key suffixes, ``ifid_<name>``)."""
    extra_vaes = dict(extra_vaes or {})
    for name in extra_vaes:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"extra_vaes names become key suffixes (ifid_<name>): use identifiers such "
                f"as 'ema' or 'raw', got {name!r}."
            )
    return extra_vaes


def build_metric(
    vae: Any,
    encoder: Callable[[Tensor], Any] | None,
    decoder: Callable[[Tensor], Any] | None,
    settings: Mapping[str, Any],
    metric_options: Mapping[str, Any] | None,
) -> InterpolatedFID:
    """The metric an :class:`~ifid_callback.monitor.IFIDMonitor` drives.

    Args:
        vae, encoder, decoder: as the monitor got them.
        settings: the monitor's metric arguments (``feature``, ``interpolation``, ``alpha``,
            ``k``, ``pick``, ``index``, ``distance``, ``input_range``, ``sample_posterior``,
            ``search_norm``, ``seed``).
        metric_options: the extras passed through (checked by :func:`check_metric_options`).

    Returns:
        An :class:`InterpolatedFID` with no bank of its own (the monitor hands it the bank), real
        statistics kept across evaluations and the index rebuilt only on request.
    """
    # Half-precision VAEs: the metric's VAEAdapter casts images in and latents/decodes out.
    return InterpolatedFID(
        encoder=encoder,
        decoder=decoder,
        vae=vae,
        bank=None,
        compute_rfid=True,
        reset_real_features=False,
        auto_refresh_index=False,
        **settings,
        **metric_options,
    )
