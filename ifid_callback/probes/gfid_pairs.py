"""Paired differences of gFID between the VAEs of a study, neighbours in gFID order, with their
standard errors (sampling, paired by probe seed and sample index; and over probe seeds).

Probe ``s`` of every VAE draws its samples from the same noise (common random numbers, see
:mod:`~ifid_callback.probes.probe_seed`), so sample j of two VAEs at seed ``s`` is a pair; the
difference of their gFIDs at that seed has the paired standard error of
:func:`~ifid_callback.probes.gfid_error.paired_gfid_difference`, from each sample's influence
(``gfid_influence[_s<index>].npy`` in each VAE's folder). Over the S seeds both VAEs share, the
mean difference has a sampling standard error ``sqrt(sum se_s^2) / S`` and, with two or more
seeds, a standard error over seeds ``std(d_s) / sqrt(S)`` that also holds the probes' training
noise. When the VAEs' latent shapes differ their noise draws are independent, and the paired
standard error is simply that of two independent gFIDs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .gfid_error import paired_gfid_difference
from .probe_seed import influence_file

__all__ = ["paired_gfid_table"]


def _pair(a: dict[str, Any], b: dict[str, Any], vaes_dir: Path) -> dict[str, Any]:
    """``gFID_a - gFID_b`` (a the worse) per shared seed and over the seeds."""
    seeds = min(len(a.get("gfid_seeds") or [a["gfid"]]), len(b.get("gfid_seeds") or [b["gfid"]]))
    values_a = (a.get("gfid_seeds") or [a["gfid"]])[:seeds]
    values_b = (b.get("gfid_seeds") or [b["gfid"]])[:seeds]
    diffs, ses = [], []
    for s in range(seeds):
        fa, fb = influence_file(vaes_dir / a["name"], s), influence_file(vaes_dir / b["name"], s)
        d = float(values_a[s]) - float(values_b[s])
        se = None
        if fa.exists() and fb.exists():
            ia, ib = np.load(fa), np.load(fb)
            if len(ia) == len(ib):
                d, se = paired_gfid_difference((values_a[s], ia), (values_b[s], ib))
        diffs.append(d)
        ses.append(se)
    known = [se for se in ses if se is not None]
    sampling_se = math.sqrt(sum(se**2 for se in known)) / seeds if len(known) == seeds else None
    independent = [a.get("gfid_se"), b.get("gfid_se")]
    return {
        "a": a["name"],
        "b": b["name"],
        "seeds": seeds,
        "difference": float(np.mean(diffs)),
        "difference_seeds": diffs,
        "se_seeds": ses,
        "sampling_se": sampling_se,
        "seed_se": float(np.std(diffs, ddof=1) / math.sqrt(seeds)) if seeds > 1 else None,
        # What treating the two gFIDs as independent would say (sampling only).
        "independent_se": (
            math.hypot(*independent) if all(v is not None for v in independent) else None
        ),
        "common_noise": list(a.get("latent_shape") or []) == list(b.get("latent_shape") or []),
    }


def paired_gfid_table(
    rows: list[dict[str, Any]], out_dir: str | Path | None
) -> list[dict[str, Any]]:
    """For each VAE in order of gFID (best first) after the first, its difference from the VAE
    just better: ``{"a" (worse), "b" (better), "difference" (mean over shared seeds, >= 0),
    "difference_seeds", "se_seeds" (paired sampling SE per seed; None where a VAE's influence
    file is missing), "sampling_se", "seed_se", "independent_se", "common_noise"}``.

    ``out_dir`` is the study folder (``<out_dir>/vaes/<name>/``); None gives no pairs.
    """
    if out_dir is None or len(rows) < 2:
        return []
    vaes_dir = Path(out_dir) / "vaes"
    order = sorted(rows, key=lambda r: float(r["gfid"]))
    return [_pair(worse, better, vaes_dir) for better, worse in zip(order, order[1:])]
