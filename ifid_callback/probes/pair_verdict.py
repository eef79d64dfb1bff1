"""The pairs of the pair check and its criterion: which VAE each figure prefers, whether the
probe sided with iFID, and whether a pair held over the check's seeds.

Pure functions over the results of :func:`~ifid_callback.probes.pair.measure_member` (no
training, no network): :func:`verdict` for one seed, :func:`holds` over seeds (the
pre-registered rule of ``docs/results/digits/pair``), :func:`summarize_check` for the means and
spreads over seeds that the demo and the report print.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CANDIDATES",
    "CONTROL",
    "DESCRIPTIONS",
    "PAIRS",
    "holds",
    "summarize_check",
    "verdict",
]

#: The pairs of the check, named; the first VAE is the one iFID is expected to prefer.
PAIRS: dict[str, tuple[str, str]] = {
    "noise-vs-align1": ("kl1e-3-noise0.3", "kl1e-3-align1"),
    "noise-vs-align0.1": ("kl1e-3-noise0.3", "kl1e-3-align0.1"),
    "control": ("ae", "ae-shuffle-b2"),
}
#: Natural candidates in the order fixed before the check ran; the demo shows the first that held.
CANDIDATES: tuple[str, ...] = ("noise-vs-align1", "noise-vs-align0.1")
#: The positive control, shown when no natural candidate holds (rFID equal by construction).
CONTROL = "control"
#: What each VAE of the pairs is, in words (the demo prints it).
DESCRIPTIONS: dict[str, str] = {
    "kl1e-3-noise0.3": "KL 1e-3 and latent-noise augmentation (std 0.3 of the latent's own)",
    "kl1e-3-align1": "KL 1e-3 and a VA-VAE-style alignment of the latent to a digit "
    "classifier's feature maps (weight 1)",
    "kl1e-3-align0.1": "KL 1e-3 and a VA-VAE-style alignment of the latent to a digit "
    "classifier's feature maps (weight 0.1)",
    "ae": "a plain autoencoder (reconstruction loss only)",
    "ae-shuffle-b2": "the same autoencoder with an invertible local shuffle of latent values "
    "after its encoder, undone before its decoder: identical reconstructions",
}

_FIGURES = ("rfid", "ifid", "gfid")


def _prefers(a: dict[str, Any], b: dict[str, Any], key: str) -> str | None:
    # Equal up to float rounding is a tie: an invertible latent map leaves reconstructions, and
    # so rFID, the same by construction (relative spread ~1e-7).
    if math.isclose(a[key], b[key], rel_tol=1e-5):
        return None
    return a["vae"] if a[key] < b[key] else b["vae"]


def verdict(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Which VAE each metric prefers (lower is better) and whom the probe sided with.

    Returns ``{"rfid_prefers", "ifid_prefers", "gfid_prefers", "gfid_heldout_prefers"}`` (a VAE
    name, or None for an exact tie, as rFID under an invertible map), ``"disagree"`` (rFID and
    iFID prefer different VAEs) and ``"probe_sides_with"`` (``"iFID"``, ``"rFID"`` or None when
    they agree or tie), and the gaps ``b - a`` of rFID, iFID and gFID in units of their
    standard errors (``*_gap_se``; the two VAEs' errors combined as independent) where known.
    """
    out: dict[str, Any] = {f"{k}_prefers": _prefers(a, b, k) for k in (*_FIGURES, "gfid_heldout")}
    r, i, g = out["rfid_prefers"], out["ifid_prefers"], out["gfid_prefers"]
    out["disagree"] = r is not None and i is not None and r != i
    out["probe_sides_with"] = None
    if out["disagree"]:
        out["probe_sides_with"] = "iFID" if g == i else "rFID"
    for key in _FIGURES:
        if f"{key}_std" not in a or f"{key}_std" not in b:
            continue  # results measured before gFID had a standard error
        se = math.hypot(a[f"{key}_std"], b[f"{key}_std"])
        out[f"{key}_gap_se"] = (b[key] - a[key]) / se if se > 0 else math.nan
    return out


def holds(runs: Sequence[dict[str, Any]], control: bool = False) -> bool:
    """The check's criterion over seeds: a natural pair holds if in every run rFID and iFID
    disagree and gFID sides with iFID; the control holds if iFID and gFID agree in every run."""
    if not runs:
        return False
    for run in runs:
        v = run["verdict"]
        if control:
            if v["ifid_prefers"] is None or v["ifid_prefers"] != v["gfid_prefers"]:
                return False
        elif not (v["disagree"] and v["probe_sides_with"] == "iFID"):
            return False
    return True


def summarize_check(check: dict[str, Any], pair: str) -> dict[str, Any]:
    """Per VAE of ``pair``: mean and standard deviation (ddof 1) over the check's seeds of
    rFID, iFID, gFID and gFID held-out, and how many seeds showed the pair's outcome."""
    entry = check["pairs"][pair]
    per_vae = {}
    for i, name in enumerate(entry["vaes"]):
        rows = [run["vaes"][i] for run in entry["runs"]]
        stats = {}
        for key in (*_FIGURES, "gfid_heldout", "psnr"):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            stats[key] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
            }
        per_vae[name] = stats
    runs = entry["runs"]
    return {
        "pair": pair,
        "seeds": len(runs),
        "disagree": sum(r["verdict"]["disagree"] for r in runs),
        "sided_with_ifid": sum(r["verdict"]["probe_sides_with"] == "iFID" for r in runs),
        "ifid_matches_gfid": sum(
            r["verdict"]["ifid_prefers"] == r["verdict"]["gfid_prefers"] for r in runs
        ),
        "rfid_matches_gfid": sum(
            r["verdict"]["rfid_prefers"] == r["verdict"]["gfid_prefers"] for r in runs
        ),
        "holds": entry["holds"],
        "vaes": per_vae,
    }
