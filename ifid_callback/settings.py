"""The protocol settings of a metric: defaults, presets, and the checks of every option.

:func:`resolve_settings` turns the arguments of :class:`~ifid_callback.metric.InterpolatedFID`
(or a report's) into the settings that run; :func:`check_options` validates the rest of the
constructor's options before anything is built.
"""

from __future__ import annotations

import numbers
from typing import Any

from ifid_callback.functional.interpolation import INTERPOLATIONS
from ifid_callback.metric_networks import feature_name
from ifid_callback.preprocessing import check_preprocessing

# What runs when neither an argument nor a preset says otherwise (the paper's main setting).
DEFAULTS: dict[str, Any] = {
    "interpolation": "slerp",
    "alpha": 0.5,
    "k": 1,
    "pick": "uniform",
    "sample_posterior": False,
    "search_norm": None,
    # None: the feature network's own ("standard" for feature="inception").
    "preprocessing": None,
}
PRESETS: dict[str, dict[str, Any]] = {
    # The official protocol: posterior sample, top-10 neighbours, one picked with probability
    # softmax(-MSE) (MSE per latent element, raw latents), slerp at alpha 0.5, and the authors'
    # path from decoder output to Inception input (no clamp, float, bilinear 299, 2x - 1).
    "paper": {
        "sample_posterior": True,
        "k": 10,
        "pick": "softmax_mse",
        "interpolation": "slerp",
        "alpha": 0.5,
        "preprocessing": "official",
    },
}
_DISTANCES = ("cosine", "sqeuclidean")
_PICKS = ("uniform", "softmax_mse", "softmax_distance")
# How latents are normalised for the neighbour search and the pick weights (None: raw latents).
SEARCH_NORMS = (None, "bn_channel")


def resolve_settings(
    preset: str | None = None,
    *,
    interpolation: str | None = None,
    alpha: float | None = None,
    k: int | None = None,
    pick: str | None = None,
    sample_posterior: bool | None = None,
    distance: str | None = None,
    search_norm: str | None = None,
    preprocessing: str | None = None,
) -> dict[str, Any]:
    """The protocol settings that run for these arguments (None: not given).

    A preset fills the settings it defines; an argument given together with a preset must agree
    with it. Unset settings take :data:`DEFAULTS`; the distance follows the interpolation
    (squared L2 for linear, cosine otherwise). :class:`InterpolatedFID` resolves its arguments
    with this function, and reports should record its result.

    Returns:
        ``{"preset", "interpolation", "alpha", "k", "pick", "sample_posterior", "search_norm",
        "preprocessing", "distance"}``; ``preprocessing`` is None unless given or set by the
        preset (the feature network's own: ``"standard"`` for ``feature="inception"``).

    Raises:
        ValueError: unknown preset or values, or arguments that contradict the preset.
    """
    given = {
        "interpolation": interpolation,
        "alpha": alpha,
        "k": k,
        "pick": pick,
        "sample_posterior": sample_posterior,
        "search_norm": search_norm,
        "preprocessing": preprocessing,
    }
    given = {key: value for key, value in given.items() if value is not None}
    settings = dict(DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
        fixed = PRESETS[preset]
        conflicts = {key: value for key, value in given.items() if value != fixed.get(key, value)}
        if conflicts:
            got = ", ".join(f"{key}={value!r}" for key, value in conflicts.items())
            sets = ", ".join(f"{key}={fixed[key]!r}" for key in conflicts)
            raise ValueError(
                f"preset={preset!r} sets {sets} but got {got}; drop those arguments to run the "
                f"preset, or drop preset= to choose every setting yourself."
            )
        settings.update(fixed)
    settings.update(given)
    if settings["pick"] == "softmax":
        raise ValueError(
            "pick='softmax' is ambiguous: use 'softmax_mse' (the official protocol: probability "
            "softmax(-MSE) on the raw latents) or 'softmax_distance' (softmax of minus the "
            "search distance)."
        )
    if settings["interpolation"] not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}, got {settings['interpolation']!r}."
        )
    alpha = settings["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    settings["alpha"] = float(alpha)
    k = settings["k"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if settings["pick"] not in _PICKS:
        raise ValueError(f"pick must be one of {_PICKS}, got {settings['pick']!r}.")
    if distance is None:
        distance = "sqeuclidean" if settings["interpolation"] == "linear" else "cosine"
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}.")
    settings["sample_posterior"] = bool(settings["sample_posterior"])
    if settings["search_norm"] not in SEARCH_NORMS:
        raise ValueError(
            f"search_norm must be one of {SEARCH_NORMS}, got {settings['search_norm']!r}: "
            "'bn_channel' standardises latents per channel with the reference's statistics for "
            "the neighbour search and the pick weights; None searches the raw latents."
        )
    if settings["preprocessing"] is not None:
        check_preprocessing(settings["preprocessing"])
    return {"preset": preset, **settings, "distance": distance}


def check_options(
    *,
    input_range: Any,
    reset_real_features: Any,
    seed: Any,
    range_tolerance: Any,
    compute_rfid: bool,
    lpips: Any,
    **extras: Any,
) -> tuple[float, float]:
    """Validate the metric's other options; returns ``input_range`` as floats.

    ``extras`` are the boolean switches (``uncertainty=...``, ``kid=...``, ...).
    """
    low, high = (float(v) for v in input_range)
    if not low < high:
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}.")
    if not isinstance(reset_real_features, bool):
        raise ValueError(f"reset_real_features must be True or False, got {reset_real_features!r}.")
    for name, value in extras.items():
        if not isinstance(value, bool):
            raise ValueError(
                f"{name} must be True or False, got {value!r}; e.g. {name}=False to skip it."
            )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}; e.g. seed=0.")
    if not float(range_tolerance) >= 0.0:
        raise ValueError(
            f"range_tolerance must be >= 0 (how far images may stray outside input_range), "
            f"got {range_tolerance!r}."
        )
    if lpips not in (None, False) and not compute_rfid:
        raise ValueError(
            "lpips scores the reconstructions, which compute_rfid=False skips; pass "
            "compute_rfid=True or drop lpips."
        )
    return low, high


def describe(metric: Any) -> dict[str, Any]:
    """The settings an :class:`~ifid_callback.metric.InterpolatedFID` runs with, as plain values
    (for logs, hparams and JSON reports)."""
    names = ("preset", "interpolation", "alpha", "k", "pick")
    out: dict[str, Any] = {key: getattr(metric, key) for key in names}
    out["sample_posterior"] = metric.vae.sample_posterior
    for key in ("search_norm", "distance", "index", "seed", "compute_rfid"):
        out[key] = getattr(metric, key)
    out["input_range"] = list(metric.input_range)
    out["reset_real_features"] = metric.reset_real_features
    out["feature"] = feature_name(metric.feature_net)
    # Further feature spaces (feature=("inception", "dinov2")): their networks, in key order.
    spaces = [e.net for e in metric.extras.values() if e.scores_decodes]
    out["feature_spaces"] = [feature_name(net) for net in spaces]
    out["preprocessing"] = metric.preprocessing
    for key in ("uncertainty", "reconstruction_metrics", "kid", "precision_recall"):
        out[key] = getattr(metric, key)
    for key in ("latent_spectrum", "equivariance"):
        out[key] = key in metric.extras
    lpips = metric.extras["lpips"] if "lpips" in metric.extras else None
    out["lpips"] = lpips.name if lpips is not None else None
    return out
