"""Numbers bound for JSON files: a non-finite value is written as ``null`` next to a flag saying why.

Strict JSON has no ``Infinity`` or ``NaN``: Python's ``json`` writes them, and strict parsers
(JavaScript's ``JSON.parse``, ``jq``, Go, Rust's serde, ``json.loads(parse_constant=...)``)
reject the whole file. A pixel-exact reconstruction has PSNR +inf, so ``ifid eval --json`` and
the Hugging Face Trainer's ``trainer_state.json`` would hold ``Infinity``. The convention, used
wherever this package writes such a file:

- a PSNR of +inf (zero reconstruction error: lossless) is written ``"psnr": null`` with
  ``"psnr_lossless": true``; the same for every PSNR key (``"eval_psnr"`` /
  ``"eval_psnr_lossless"``, ``"psnr_ema"`` / ``"psnr_ema_lossless"``);
- any other non-finite number is written ``null`` with ``"<key>_nonfinite"`` holding ``"nan"``,
  ``"inf"`` or ``"-inf"``.

A flag appears only next to a ``null`` it explains; finite numbers and other values are kept.
Loggers that store floats (TensorBoard, W&B, MLflow, CSV) and the Python results
(``evaluate_vae``, ``IFIDMonitor.evaluate``, the Trainer's returned metrics) keep the float +inf.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "is_strict", "strict_values"]


def _is_psnr(key: str) -> bool:
    return "psnr" in re.split(r"[/_.\s-]", key.lower())


def strict_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each non-finite float replaced by None plus its flag (see the module).

    Nested mappings are treated the same way, key by key; a non-finite number inside a list
    becomes None (a list has no place for a flag). The input is not modified.
    """
    out: dict[str, Any] = {}
    flags: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out[key] = strict_values(value)
        elif isinstance(value, (list, tuple)):
            out[key] = [_strict_item(v) for v in value]
        elif _non_finite(value):
            number = float(value)
            out[key] = None
            if _is_psnr(str(key)) and number == math.inf:
                flags[f"{key}_lossless"] = True
            else:
                flags[f"{key}_nonfinite"] = "nan" if math.isnan(number) else str(number)
        else:
            out[key] = value
    for flag, value in flags.items():
        out.setdefault(flag, value)  # a key of that name already there wins
    return out


def _strict_item(value: Any) -> Any:
    if isinstance(value, Mapping):
        return strict_values(value)
    if isinstance(value, (list, tuple)):
        return [_strict_item(v) for v in value]
    return None if _non_finite(value) else value


def _non_finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy and 0-d torch scalars
            value = value.item() if getattr(value, "ndim", None) == 0 else value
        except (AttributeError, TypeError, ValueError, RuntimeError):
            return False
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
    return not math.isfinite(value)


def is_strict(values: Mapping[str, Any]) -> bool:
    """Whether ``values`` holds no non-finite number (at any depth)."""
    try:
        json.dumps(values, allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def dumps(values: Mapping[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_values`, refusing (ValueError) anything non-strict left."""
    return json.dumps(strict_values(values), allow_nan=False, **kwargs)
