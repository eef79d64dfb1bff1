"""The study's analysis: how well each VAE metric predicts gFID and gFID(t) across the VAEs.

Correlations with bootstrap intervals (probe seeds resampled within each VAE where a target has
several), iFID against rFID as predictors (paired bootstrap, Williams' test, partial correlation),
the iFID ablations, selection regret, split-half reliability, and the same per group of VAEs.
Pure functions of the per-VAE result rows; :mod:`~ifid_callback.probes.report` writes them out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .stats import (
    bootstrap_correlation,
    bootstrap_partial_correlation,
    correlation,
    paired_bootstrap_difference,
    seed_bootstrap_correlation,
    selection_regret,
    top_k_overlap,
    williams_test,
)

__all__ = ["CONSTANT_RTOL", "METRICS", "analyse", "compare_predictors", "metric_values"]

#: A predictor whose spread across the VAEs is below this fraction of its size is treated as
#: constant (rFID across an invertible-map series differs only by float rounding).
CONSTANT_RTOL = 1e-6

#: Candidate predictors, each oriented so that lower is better (like gFID): ``(key, label)``.
METRICS: tuple[tuple[str, str], ...] = (
    ("rfid", "rFID"),
    ("ifid", "iFID"),
    ("neg_psnr", "-PSNR"),
    ("probe_loss", "probe loss"),
)


def metric_values(rows: list[dict[str, Any]], key: str) -> list[float]:
    if key == "neg_psnr":
        return [-float(r["psnr"]) for r in rows]
    return [float(r[key]) if r.get(key) is not None else math.nan for r in rows]


def _targets(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """gFID(t) for every t in the study, plus t = 1 (gFID) and t = 0 (rFID, by definition)."""
    ts = sorted({float(t) for r in rows for t in r["gfid_t"]})
    targets = {"gfid": [float(r["gfid"]) for r in rows]}
    if all(r.get("gfid_heldout") is not None for r in rows):
        targets["gfid_heldout"] = [float(r["gfid_heldout"]) for r in rows]
    targets["gfid_t=0"] = [float(r["rfid"]) for r in rows]  # gFID(0) is rFID by definition
    for t in ts:
        targets[f"gfid_t={t:g}"] = [float(r["gfid_t"].get(f"{t:g}", math.nan)) for r in rows]
    return targets


def _seed_targets(rows: list[dict[str, Any]], target: str) -> list[list[float]] | None:
    """Per-seed values of ``gfid`` / ``gfid_heldout`` when every row has >= 2 of them."""
    key = f"{target}_seeds"
    seeds = [r.get(key) for r in rows]
    if not all(isinstance(v, list) and len(v) >= 2 for v in seeds):
        return None
    if len({len(v) for v in seeds}) != 1:
        return None
    return [[float(x) for x in v] for v in seeds]


def _target_seeds(rows: list[dict[str, Any]], target: str) -> list[list[float]] | None:
    """Per-seed values of a target of :func:`_targets` (gFID, held-out gFID, gFID(t))."""
    if target in ("gfid", "gfid_heldout"):
        return _seed_targets(rows, target)
    if target.startswith("gfid_t=") and target != "gfid_t=0":
        label = target.partition("=")[2]
        seeds = [(r.get("gfid_t_seeds") or {}).get(label) for r in rows]
        if (
            all(isinstance(v, list) and len(v) >= 2 for v in seeds)
            and len({len(v) for v in seeds}) == 1
        ):
            return [[float(x) for x in v] for v in seeds]
    return None


def compare_predictors(
    rows: list[dict[str, Any]],
    a: str = "ifid",
    b: str = "rfid",
    target: str = "gfid",
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Does metric ``a`` predict ``target`` better than metric ``b`` on these VAEs?

    Returns the paired bootstrap interval of ``corr(a, target) - corr(b, target)`` (Pearson and
    Spearman; probe seeds resampled within each VAE when rows carry ``<target>_seeds``), the
    correlations with their (seed-level) intervals, Williams' test of the Pearson difference and
    the partial correlation of ``a`` with the target given ``b``.
    """
    n = len(rows)
    if n < 4:
        return {"n": n, "skipped": "needs at least 4 VAEs"}
    xa = metric_values(rows, a)
    xb = metric_values(rows, b)
    y = [float(r[target]) for r in rows]
    y_seeds = _seed_targets(rows, target)
    out: dict[str, Any] = {"a": a, "b": b, "target": target, "n": n, "seed_level": bool(y_seeds)}
    spread_b = float(np.ptp(xb)) / max(float(np.max(np.abs(xb))), 1e-30)
    if spread_b < CONSTANT_RTOL:
        # E.g. rFID across the positive control: equal by construction, so any correlation
        # with it would measure float rounding. Only corr(a, target) means something.
        out["b_constant"] = {"relative_spread": spread_b, "value": float(np.mean(xb))}
        for method in ("pearson", "spearman"):
            res = _correlation_interval(xa, y, y_seeds, method, num_resamples, seed)
            out[f"{a}_{method}"] = res.to_dict()
        return out
    for method in ("pearson", "spearman"):
        out[f"difference_{method}"] = paired_bootstrap_difference(
            xa, xb, y, method, y_seeds=y_seeds, num_resamples=num_resamples, seed=seed
        ).to_dict()
        for key, x in ((a, xa), (b, xb)):
            res = _correlation_interval(x, y, y_seeds, method, num_resamples, seed)
            out[f"{key}_{method}"] = res.to_dict()
    r_a, r_b, r_ab = correlation(y, xa), correlation(y, xb), correlation(xa, xb)
    if all(math.isfinite(v) for v in (r_a, r_b, r_ab)):
        out["williams"] = williams_test(r_a, r_b, r_ab, n).to_dict()
    out["partial"] = bootstrap_partial_correlation(
        xa, y, xb, y_seeds=y_seeds, num_resamples=num_resamples, seed=seed
    ).to_dict()
    if y_seeds is not None:
        per_seed = np.asarray(y_seeds)
        out["per_seed_pearson"] = {
            key: [correlation(x, per_seed[:, j]) for j in range(per_seed.shape[1])]
            for key, x in ((a, xa), (b, xb))
        }
        out["mean_seed_spread"] = float(np.mean(np.std(per_seed, axis=1, ddof=1)))
        out["spread_across_vaes"] = float(np.std(per_seed.mean(axis=1), ddof=1))
    return out


def _correlation_interval(
    x: Any, y: list[float], y_seeds: Any, method: str, num_resamples: int, seed: int
) -> Any:
    """Bootstrap interval of corr(x, target): seed-level (probe seeds resampled within each VAE)
    when the target has several seeds per VAE, else over the VAEs only."""
    if y_seeds is not None:
        return seed_bootstrap_correlation(
            x, y_seeds, method, num_resamples=num_resamples, seed=seed
        )
    return bootstrap_correlation(x, y, method, num_resamples=num_resamples, seed=seed)


def _ablation_correlations(
    rows: list[dict[str, Any]], num_resamples: int, seed: int
) -> dict[str, Any]:
    """Correlation with gFID of iFID under each ablation setting (the paper's Tables 4-5)."""
    labels = [lab for lab in (rows[0].get("ifid_ablation") or {})] if rows else []
    if len(rows) < 4 or not labels:
        return {}
    y = [float(r["gfid"]) for r in rows]
    y_seeds = _seed_targets(rows, "gfid")
    out: dict[str, Any] = {}
    for label in labels:
        if not all(label in (r.get("ifid_ablation") or {}) for r in rows):
            continue
        x = [float(r["ifid_ablation"][label]) for r in rows]
        out[label] = {}
        for method in ("pearson", "spearman"):
            res = _correlation_interval(x, y, y_seeds, method, num_resamples, seed)
            out[label][method] = res.to_dict()
    return out


def analyse(
    rows: list[dict[str, Any]],
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    top_k: int = 3,
    groups: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Correlations (Pearson, Spearman, bootstrap 95% intervals) of every metric with gFID and each
    gFID(t), and the selection regret and top-k overlap of every metric with respect to gFID."""
    targets = _targets(rows)
    correlations: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    names = [r["name"] for r in rows]
    k = min(top_k, len(rows))
    for key, _label in METRICS:
        values = metric_values(rows, key)
        correlations[key] = {}
        for target, t_values in targets.items():
            ok = [
                i
                for i in range(len(rows))
                if math.isfinite(values[i]) and math.isfinite(t_values[i])
            ]
            if len(ok) < 3:
                continue
            x = [values[i] for i in ok]
            y = [t_values[i] for i in ok]
            seeds = _target_seeds(rows, target)
            y_seeds = [seeds[i] for i in ok] if seeds is not None else None
            correlations[key][target] = {
                m: _correlation_interval(x, y, y_seeds, m, num_resamples, seed).to_dict()
                for m in ("pearson", "spearman")
            }
        if all(math.isfinite(v) for v in values) and len(rows) >= 2:
            pick = int(np.argmin(values))
            selection[key] = {
                "picked": names[pick],
                "regret": selection_regret(values, targets["gfid"]),
                f"top{k}_overlap": top_k_overlap(values, targets["gfid"], k),
            }
    reliability: dict[str, Any] = {}
    if len(rows) >= 3 and all("split_half" in r for r in rows):
        for key in ("rfid", "ifid", "gfid"):
            a = [float(r["split_half"][key][0]) for r in rows]
            b = [float(r["split_half"][key][1]) for r in rows]
            reliability[key] = {
                "spearman_between_halves": correlation(a, b, "spearman"),
                "pearson_between_halves": correlation(a, b, "pearson"),
                "mean_abs_half_difference": float(np.mean(np.abs(np.subtract(a, b)))),
                "spread_across_vaes": float(np.std(a + b)),
            }
    best = int(np.argmin(targets["gfid"]))
    groups_out: dict[str, Any] = {}
    for group, members in (groups or {}).items():
        sub = [r for r in rows if r["name"] in set(members)]
        groups_out[group] = {
            "members": [r["name"] for r in sub],
            "comparison": {
                t: compare_predictors(sub, target=t, num_resamples=num_resamples, seed=seed)
                for t in ("gfid", "gfid_heldout")
                if t in targets
            },
            "ablation": _ablation_correlations(sub, num_resamples, seed),
        }
    comparison = {
        target: compare_predictors(rows, target=target, num_resamples=num_resamples, seed=seed)
        for target in ("gfid", "gfid_heldout")
        if target in targets
    }
    return {
        "num_vaes": len(rows),
        "comparison": comparison,
        "ablation": _ablation_correlations(rows, num_resamples, seed),
        "groups": groups_out,
        "best_gfid": {"name": names[best], "gfid": targets["gfid"][best]},
        "correlations": correlations,
        "selection": selection,
        "top_k": k,
        "split_half_reliability": reliability,
    }
