"""The natural family's pre-registered analysis and its report (``DESIGN.md``, sections 4-5).

:func:`analyse_natural_family` takes one row per natural VAE (:func:`natural_table`) and
computes the primary test (:func:`~ifid_callback.probes.family_stats.ragged_paired_difference`
of Spearman(iFID, gFID) - Spearman(rFID, gFID), VAEs and their probe seeds resampled) with the
pre-registered decision, then the secondaries: the same difference per latent shape and after
adjusting for shape, with Pearson, against held-out gFID and against gFID(t); each companion
predictor's Spearman correlation with gFID; partial correlations; the VAEs where iFID misses
what the probe sees; the probe-seed noise against the spread across VAEs. The control check is
not part of it: the caller runs it first and passes its outcome along for the report.
:func:`format_natural_report` writes the Markdown, :func:`write_natural_report` the files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .family_stats import (
    ragged_correlation,
    ragged_paired_difference,
    ragged_partial_correlation,
    seed_spread,
    stratified_paired_difference,
)

__all__ = [
    "PREDICTORS",
    "analyse_natural_family",
    "decision",
    "format_natural_report",
    "natural_table",
    "strict_json",
    "vae_table_csv",
    "write_natural_report",
]

#: Predictors of gFID in the analysis: key in a table row -> label (lower is better for each).
PREDICTORS: dict[str, str] = {
    "ifid": "iFID",
    "rfid": "rFID",
    "latent_hf_energy": "latent HF energy",
    "equivariance_error": "equivariance error",
    "probe_loss_area": "probe loss-curve area",
    "neg_psnr": "-PSNR",
}
#: The companion predictors (section 5): each correlated with gFID and partialled on iFID.
COMPANIONS: tuple[str, ...] = (
    "latent_hf_energy",
    "equivariance_error",
    "probe_loss_area",
    "neg_psnr",
)


def natural_table(
    rows: Sequence[Mapping[str, Any]],
    members: Mapping[str, Mapping[str, Any]],
    companions: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per VAE for the analysis, from the study's rows, the members' recipes and the
    companions (:func:`~ifid_callback.probes.natural_companions.companion_predictors`)."""
    table = []
    for row in rows:
        name = row["name"]
        recipe, shape = name.rsplit("-", 1)
        comp = companions[name]
        table.append(
            {
                "name": name,
                "recipe": recipe,
                "shape": shape,
                "objective": members.get(name, {}).get("objective"),
                "rfid": float(row["rfid"]),
                "ifid": float(row["ifid"]),
                "psnr": float(row["psnr"]),
                "neg_psnr": -float(row["psnr"]),
                "gfid": float(np.mean(row["gfid_seeds"])),
                "gfid_seeds": [float(v) for v in row["gfid_seeds"]],
                "gfid_heldout_seeds": [float(v) for v in row["gfid_heldout_seeds"]],
                "gfid_t_seeds": {
                    t: [float(v) for v in vs] for t, vs in row["gfid_t_seeds"].items()
                },
                "probe_seeds": list(row.get("probe_seeds", [])),
                "latent_hf_energy": float(comp["latent_hf_energy"]),
                "equivariance_error": float(comp["equivariance_error"]),
                "probe_loss_area": float(comp["probe_loss_area"]),
                "probe_loss_area_seeds": [float(v) for v in comp["probe_loss_area_seeds"]],
                "metric_ifid": float(comp["metric_ifid"]),
                "metric_rfid": float(comp["metric_rfid"]),
            }
        )
    return table


def decision(primary: Mapping[str, Any], n: int) -> str:
    """The pre-registered reading of the primary interval (``DESIGN.md``, section 4)."""
    if primary["low"] > 0:
        return "iFID ranks natural VAEs by gFID better than rFID"
    if primary["high"] < 0:
        return "rFID ranks natural VAEs by gFID better than iFID"
    return f"no difference of this size is detectable with {n} VAEs"


def _misses(table: Sequence[Mapping[str, Any]], places: int) -> list[dict[str, Any]]:
    import scipy.stats

    g = scipy.stats.rankdata([r["gfid"] for r in table])
    i = scipy.stats.rankdata([r["ifid"] for r in table])
    out = []
    for row, gr, ir in zip(table, g, i, strict=True):
        if abs(gr - ir) > places:
            out.append(
                {
                    "name": row["name"],
                    "recipe": row["recipe"],
                    "shape": row["shape"],
                    "gfid_rank": float(gr),
                    "ifid_rank": float(ir),
                    # rank 1 is the lowest (best); positive: the probe generates better than
                    # iFID says.
                    "ifid_minus_gfid_rank": float(ir - gr),
                }
            )
    return sorted(out, key=lambda m: -abs(m["ifid_minus_gfid_rank"]))


def analyse_natural_family(
    table: Sequence[Mapping[str, Any]],
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    miss_places: int = 12,
) -> dict[str, Any]:
    """The primary test, its decision and every secondary of ``DESIGN.md`` on ``table``.

    Args:
        table: one row per natural VAE (:func:`natural_table`); controls never belong here.
        num_resamples, seed, confidence: of every bootstrap (pre-registered: 10,000, 0, 0.95).
        miss_places: a VAE is listed as a miss when its gFID and iFID ranks differ by more.

    Returns:
        ``{"n", "primary", "decision", "secondary": {...}, "companions", "partial", "misses",
        "noise"}``; intervals as dicts of
        :class:`~ifid_callback.probes.stats.PairedDifference` or
        :class:`~ifid_callback.probes.stats.CorrelationResult`.
    """
    n = len(table)
    boot = dict(num_resamples=num_resamples, confidence=confidence, seed=seed)
    ifid = [r["ifid"] for r in table]
    rfid = [r["rfid"] for r in table]
    gfid = [r["gfid_seeds"] for r in table]

    def difference(rows: Sequence[Mapping[str, Any]], target: Any, method: str) -> dict | None:
        if len(rows) < 3:
            return None
        return ragged_paired_difference(
            [r["ifid"] for r in rows],
            [r["rfid"] for r in rows],
            [target(r) for r in rows],
            method,
            **boot,
        ).to_dict()

    primary = difference(table, lambda r: r["gfid_seeds"], "spearman")
    if primary is None:
        raise ValueError(f"the primary test needs at least 3 natural VAEs, got {n}")
    shapes = list(dict.fromkeys(r["shape"] for r in table))
    secondary: dict[str, Any] = {
        "by_shape": {
            s: difference(
                [r for r in table if r["shape"] == s], lambda r: r["gfid_seeds"], "spearman"
            )
            for s in shapes
        },
        "pearson": difference(table, lambda r: r["gfid_seeds"], "pearson"),
        "heldout": difference(table, lambda r: r["gfid_heldout_seeds"], "spearman"),
        "gfid_t": {
            t: difference(table, lambda r, t=t: r["gfid_t_seeds"][t], "spearman")
            for t in table[0]["gfid_t_seeds"]
        },
    }
    counts = {s: sum(r["shape"] == s for r in table) for s in shapes}
    if len(shapes) > 1 and min(counts.values()) >= 2:
        secondary["shape_adjusted"] = stratified_paired_difference(
            ifid, rfid, gfid, [r["shape"] for r in table], **boot
        ).to_dict()
    else:
        secondary["shape_adjusted"] = None
    companions = {
        key: ragged_correlation([r[key] for r in table], gfid, "spearman", **boot).to_dict()
        for key in PREDICTORS
    }
    partial = {
        f"{key}|ifid": ragged_partial_correlation(
            [r[key] for r in table], ifid, gfid, "spearman", **boot
        ).to_dict()
        for key in COMPANIONS
    }
    partial["ifid|rfid"] = ragged_partial_correlation(
        ifid, rfid, gfid, "spearman", **boot
    ).to_dict()
    return {
        "n": n,
        "shapes": counts,
        "bootstrap": {"num_resamples": num_resamples, "seed": seed, "confidence": confidence},
        "primary": primary,
        "decision": decision(primary, n),
        "secondary": secondary,
        "companions": companions,
        "partial": partial,
        "misses": {"places": miss_places, "vaes": _misses(table, miss_places)},
        "noise": seed_spread(gfid),
        "metric_check": {
            "max_abs_ifid_difference": max(abs(r["metric_ifid"] - r["ifid"]) for r in table),
            "max_abs_rfid_difference": max(abs(r["metric_rfid"] - r["rfid"]) for r in table),
        },
    }


# --- the report ----------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _e(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1e}"


def _diff_row(label: str, d: Mapping[str, Any] | None) -> str:
    if d is None:
        return f"| {label} | n/a (fewer than 3 VAEs) | | | | |"
    return (
        f"| {label} | {d['n']} | {_f(d['corr_a'])} | {_f(d['corr_b'])} | "
        f"{_f(d['difference'])} [{_f(d['low'])}, {_f(d['high'])}] | {_f(d['prob_positive'])} |"
    )


def _corr_row(label: str, c: Mapping[str, Any]) -> str:
    return (
        f"| {label} | {_f(c['value'])} [{_f(c['low'])}, {_f(c['high'])}] | {_f(c['p_value'], 3)} |"
    )


def format_natural_report(payload: Mapping[str, Any]) -> str:
    """The Markdown report of a run: ``payload`` as written to ``results.json`` (``settings``,
    ``design_differences``, ``dropped``, ``control``, ``analysis`` or None, ``table``)."""
    lines = ["# The natural family: results", ""]
    lines += [
        "Design: [`DESIGN.md`](DESIGN.md) (pre-registered before any run). "
        "Every FID is in the digit classifier's feature space; numbers compare with each other only.",
        "",
        "## Changes from the design",
        "",
    ]
    diffs = payload.get("design_differences") or {}
    if diffs:
        lines += [
            f"- `{k}`: design {v['design']!r}, this run {v['run']!r}" for k, v in diffs.items()
        ]
        lines += ["", "(Give the reason for each change here.)"]
    else:
        lines += [
            "None: the run used the pre-registered settings, as amended before the run "
            "(DESIGN.md's closing section lists each change with its reason)."
        ]
    lines += ["", "## Pipeline checks (outside the analysis)", ""]
    control = payload.get("control")
    if control is None:
        lines += ["- Control pair: not run (settings.control is False)."]
    else:
        lines += [
            f"- Control pair `{control['vaes'][0]}` vs `{control['vaes'][1]}` (4x4x4, seed "
            f"{control['seed']}): rFID {_f(control['rfid'][0])} vs {_f(control['rfid'][1])}, "
            f"iFID {_f(control['ifid'][0])} vs {_f(control['ifid'][1])}, gFID "
            f"{_f(control['gfid'][0])} vs {_f(control['gfid'][1])}: iFID prefers "
            f"`{control['ifid_prefers']}`, gFID prefers `{control['gfid_prefers']}`; "
            f"**{'holds' if control['holds'] else 'FAILS'}**."
        ]
    dropped = payload.get("dropped") or {}
    if dropped:
        for name, why in dropped.items():
            lines.append(f"- Dropped `{name}`: {why}")
    else:
        lines.append("- No VAE dropped (none diverged).")
    analysis = payload.get("analysis")
    if analysis is not None:
        check = analysis["metric_check"]
        lines.append(
            f"- The metric's iFID/rFID (InterpolatedFID, the pass that gives the companions) "
            f"against the study's: max |difference| {_e(check['max_abs_ifid_difference'])} / "
            f"{_e(check['max_abs_rfid_difference'])}."
        )
    if analysis is None:
        lines += [
            "",
            "**Not analysed:** the control pair failed, so the pipeline is taken to be broken "
            "(DESIGN.md, section 3).",
        ]
        return "\n".join(lines) + "\n"
    if control is not None and not control["holds"]:
        lines += [
            "",
            "**Warning:** the control failed; this analysis was computed only because "
            "`analyse_if_control_fails` was set (smoke runs). Do not read it.",
        ]
    p, n = analysis["primary"], analysis["n"]
    boot = analysis["bootstrap"]
    header = "| | VAEs | Spearman(iFID, gFID) | Spearman(rFID, gFID) | difference [95 % CI] | P(diff > 0) |"
    rule = "|---|---|---|---|---|---|"
    lines += [
        "",
        "## Primary endpoint",
        "",
        f"{n} natural VAEs, each VAE's gFID the mean over its probe seeds; paired bootstrap, "
        f"{boot['num_resamples']} resamples, seed {boot['seed']} (VAEs and their seeds resampled).",
        "",
        header,
        rule,
        _diff_row("primary", p),
        "",
        f"**Decision (pre-registered rule): {analysis['decision']}.**",
        "",
        "## Secondary analyses (no decision rides on them)",
        "",
        header.replace("Spearman(", "corr("),
        rule,
    ]
    sec = analysis["secondary"]
    for shape, d in sec["by_shape"].items():
        lines.append(_diff_row(f"within {shape}", d))
    if sec.get("shape_adjusted") is not None:
        lines.append(_diff_row("adjusted for shape (stratified Spearman)", sec["shape_adjusted"]))
    lines.append(_diff_row("Pearson", sec["pearson"]))
    lines.append(_diff_row("held-out gFID", sec["heldout"]))
    for t, d in sec["gfid_t"].items():
        lines.append(_diff_row(f"gFID(t={t})", d))
    lines += [
        "",
        "Each predictor's Spearman correlation with gFID (bootstrap interval; p from the seed "
        "means):",
        "",
        "| predictor | Spearman with gFID [95 % CI] | p |",
        "|---|---|---|",
    ]
    for key, c in analysis["companions"].items():
        lines.append(_corr_row(PREDICTORS[key], c))
    lines += [
        "",
        "Partial (rank) correlations with gFID: does a predictor add to another?",
        "",
        "| predictor given | partial Spearman [95 % CI] | p |",
        "|---|---|---|",
    ]
    for key, c in analysis["partial"].items():
        x, z = key.split("|")
        lines.append(_corr_row(f"{PREDICTORS[x]} given {PREDICTORS[z]}", c))
    misses = analysis["misses"]
    lines += [
        "",
        f"Where iFID misses what the probe sees (gFID and iFID ranks more than "
        f"{misses['places']} places apart; rank 1 is best; positive: the probe generates better "
        "than iFID says):",
        "",
    ]
    if misses["vaes"]:
        lines += [
            "| VAE | recipe | shape | gFID rank | iFID rank | iFID - gFID rank |",
            "|---|---|---|---|---|---|",
        ]
        for m in misses["vaes"]:
            lines.append(
                f"| {m['name']} | {m['recipe']} | {m['shape']} | {m['gfid_rank']:g} | "
                f"{m['ifid_rank']:g} | {m['ifid_minus_gfid_rank']:+g} |"
            )
    else:
        lines.append("None.")
    noise = analysis["noise"]
    ratio = noise["ratio"]
    target = ratio <= 1 / 3 if ratio is not None and math.isfinite(ratio) else None
    lines += [
        "",
        f"Noise: gFID's spread across probe seeds {_f(noise['seed_std'])} (pooled over the "
        f"{noise['vaes_with_seeds']} VAEs with two seeds) against its spread across VAEs "
        f"{_f(noise['vae_std'])}: ratio {_f(noise['ratio'])} (target at most 1/3: "
        f"{'met' if target else 'not met' if target is not None else 'n/a'}).",
        "",
        "## Per VAE",
        "",
        "| VAE | rFID | iFID | PSNR | gFID (seeds) | held-out gFID | latent HF energy | "
        "equivariance error | probe loss area |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["table"]:
        seeds = ", ".join(_f(v) for v in r["gfid_seeds"])
        lines.append(
            f"| {r['name']} | {_f(r['rfid'])} | {_f(r['ifid'])} | {_f(r['psnr'])} | {seeds} | "
            f"{_f(float(np.mean(r['gfid_heldout_seeds'])))} | {_f(r['latent_hf_energy'], 3)} | "
            f"{_f(r['equivariance_error'], 3)} | {_f(r['probe_loss_area'], 4)} |"
        )
    return "\n".join(lines) + "\n"


def vae_table_csv(table: Sequence[Mapping[str, Any]]) -> str:
    """The per-VAE table as CSV (lists joined with ``;``)."""
    keys = [
        "name", "recipe", "shape", "objective", "rfid", "ifid", "psnr", "gfid", "gfid_seeds",
        "gfid_heldout_seeds", "latent_hf_energy", "equivariance_error", "probe_loss_area",
        "probe_loss_area_seeds", "metric_ifid", "metric_rfid",
    ]  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(keys)

    def cell(value: Any) -> Any:
        if isinstance(value, list):
            return ";".join("" if v is None else f"{v:.6g}" for v in value)
        return "" if value is None else value

    for r in table:
        writer.writerow([cell(r.get(k)) for k in keys])
    return buf.getvalue()


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_natural_report(out_dir: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``vaes.csv`` of a run to ``out_dir``
    (non-finite numbers, e.g. an undefined correlation, written as ``null``: strict JSON)."""
    from pathlib import Path

    from .stages import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = strict_json(payload)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "csv": out / "vaes.csv",
    }
    write_json(paths["json"], dict(payload))
    paths["markdown"].write_text(format_natural_report(payload))
    paths["csv"].write_text(vae_table_csv(payload["table"]))
    return paths
