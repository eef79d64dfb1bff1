"""The study's report: correlation of each VAE metric with gFID and gFID(t), selection regret,
and the per-VAE table, as JSON, CSV, markdown and scatter-plot PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .stats import bootstrap_correlation, selection_regret, top_k_overlap

__all__ = ["METRICS", "analyse", "write_report"]

#: Candidate predictors, each oriented so that lower is better (like gFID): ``(key, label)``.
METRICS: tuple[tuple[str, str], ...] = (
    ("rfid", "rFID"),
    ("ifid", "iFID"),
    ("neg_psnr", "-PSNR"),
    ("probe_loss", "probe loss"),
)


def _metric_values(rows: list[dict[str, Any]], key: str) -> list[float]:
    if key == "neg_psnr":
        return [-float(r["psnr"]) for r in rows]
    return [float(r[key]) if r.get(key) is not None else math.nan for r in rows]


def _targets(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """gFID(t) for every t in the study, plus t = 1 (gFID) and t = 0 (rFID, by definition)."""
    ts = sorted({float(t) for r in rows for t in r["gfid_t"]})
    targets = {"gfid": [float(r["gfid"]) for r in rows]}
    targets["gfid_t=0"] = [float(r["rfid"]) for r in rows]  # gFID(0) is rFID by definition
    for t in ts:
        targets[f"gfid_t={t:g}"] = [float(r["gfid_t"].get(f"{t:g}", math.nan)) for r in rows]
    return targets


def analyse(
    rows: list[dict[str, Any]], *, num_resamples: int = 2000, seed: int = 0, top_k: int = 3
) -> dict[str, Any]:
    """Correlations (Pearson, Spearman, bootstrap 95% intervals) of every metric with gFID and each
    gFID(t), and the selection regret and top-k overlap of every metric with respect to gFID."""
    targets = _targets(rows)
    correlations: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    names = [r["name"] for r in rows]
    k = min(top_k, len(rows))
    for key, _label in METRICS:
        values = _metric_values(rows, key)
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
            correlations[key][target] = {
                m: bootstrap_correlation(x, y, m, num_resamples=num_resamples, seed=seed).to_dict()
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
        from .stats import correlation

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
    return {
        "num_vaes": len(rows),
        "best_gfid": {"name": names[best], "gfid": targets["gfid"][best]},
        "correlations": correlations,
        "selection": selection,
        "top_k": k,
        "split_half_reliability": reliability,
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    ts = sorted({float(t) for r in rows for t in r["gfid_t"]})
    header = [
        "VAE",
        "latent",
        "rFID",
        "iFID",
        "PSNR",
        "probe loss",
        "gFID",
        *[f"gFID(t={t:g})" for t in ts],
        "IRS",
        "IRS_inf",
        "IRS_inf 95%",
    ]
    body = []
    for r in sorted(rows, key=lambda r: r["gfid"]):
        irs = r["irs"]
        body.append(
            [
                r["name"],
                "x".join(str(d) for d in r["latent_shape"]),
                r["rfid"],
                r["ifid"],
                r["psnr"],
                r["probe_loss"],
                r["gfid"],
                *[r["gfid_t"].get(f"{t:g}") for t in ts],
                irs["irs"],
                irs["irs_inf"],
                f"[{_fmt(irs['irs_inf_low'], 3)}, {_fmt(irs['irs_inf_high'], 3)}]",
            ]
        )
    return header, body


def _markdown(result: dict[str, Any], analysis: dict[str, Any]) -> str:
    rows = result["vaes"]
    header, body = _table_rows(rows)
    lines = [
        "## Per-VAE results (sorted by gFID)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in body:
        cells = [
            _fmt(v, 3 if h.startswith("IRS") or h == "probe loss" else 2)
            for h, v in zip(header, row, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Correlation with gFID and gFID(t)",
        "",
        "Pearson (PCC) and Spearman (SRCC) with 95% bootstrap intervals over the VAEs; "
        "every metric is oriented so that lower is better (a good predictor has a positive "
        "correlation).",
        "",
        "| metric | target | PCC [95% CI] | SRCC [95% CI] |",
        "|---|---|---|---|",
    ]
    labels = dict(METRICS)
    for key, per_target in analysis["correlations"].items():
        for target, c in per_target.items():
            p, s = c["pearson"], c["spearman"]
            lines.append(
                f"| {labels[key]} | {target} | {_fmt(p['value'])} [{_fmt(p['low'])}, "
                f"{_fmt(p['high'])}] | {_fmt(s['value'])} [{_fmt(s['low'])}, {_fmt(s['high'])}] |"
            )
    k = analysis["top_k"]
    lines += [
        "",
        "## Selecting a VAE by each metric",
        "",
        f"Best gFID: {analysis['best_gfid']['name']} "
        f"({_fmt(analysis['best_gfid']['gfid'])}). Regret = gFID of the metric's pick "
        f"minus the best gFID.",
        "",
        f"| metric | picks | regret (gFID) | top-{k} overlap |",
        "|---|---|---|---|",
    ]
    for key, sel in analysis["selection"].items():
        lines.append(
            f"| {labels[key]} | {sel['picked']} | {_fmt(sel['regret'])} | "
            f"{_fmt(sel[f'top{k}_overlap'])} |"
        )
    rel = analysis.get("split_half_reliability") or {}
    if rel:
        lines += [
            "",
            "## Split-half reliability",
            "",
            "Each FID recomputed on two disjoint halves of its images (even and odd positions): do the two halves rank "
            "the VAEs the same way, and how far apart are they compared with the spread "
            "across VAEs?",
            "",
            "| FID | SRCC half A vs B | PCC half A vs B | mean abs(A - B) | std across VAEs |",
            "|---|---|---|---|---|",
        ]
        for key, r in rel.items():
            lines.append(
                f"| {key} | {_fmt(r['spearman_between_halves'])} | "
                f"{_fmt(r['pearson_between_halves'])} | "
                f"{_fmt(r['mean_abs_half_difference'])} | "
                f"{_fmt(r['spread_across_vaes'])} |"
            )
    real = result.get("real") or {}
    if real:
        lines += [
            "",
            "## FID noise floor (real images only)",
            "",
            f"- held-out real images (n={real.get('gfid_floor_n')}) vs the gFID reference: "
            f"{_fmt(real.get('gfid_floor'))}",
            f"- two disjoint halves of the reference (n={real.get('reference_split_half_n')}"
            f" each): {_fmt(real.get('reference_split_half_fid'))}",
        ]
        if "eval_split_half_fid" in real:
            lines.append(
                f"- two disjoint halves of the held-out set "
                f"(n={real['eval_split_half_n']} each): "
                f"{_fmt(real['eval_split_half_fid'])}"
            )
        if "irs_real" in real:
            ir = real["irs_real"]
            lines.append(
                f"- IRS of held-out real images (n={ir['num_samples']}): "
                f"{_fmt(ir['irs'], 3)}, IRS_inf {_fmt(ir['irs_inf'], 3)}"
            )
    return "\n".join(lines) + "\n"


def _plots(result: dict[str, Any], analysis: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["vaes"]
    names = [r["name"] for r in rows]
    gfid = [r["gfid"] for r in rows]
    paths: dict[str, Path] = {}
    labels = dict(METRICS)
    for key in ("rfid", "ifid", "neg_psnr"):
        x = _metric_values(rows, key)
        fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
        ax.scatter(x, gfid, color="tab:blue")
        for xi, yi, n in zip(x, gfid, names, strict=True):
            ax.annotate(n, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        c = analysis["correlations"].get(key, {}).get("gfid")
        title = labels[key] + " vs gFID"
        if c:
            title += f"  (PCC {c['pearson']['value']:.2f}, SRCC {c['spearman']['value']:.2f})"
        ax.set(xlabel=labels[key], ylabel="gFID", title=title)
        ax.title.set_fontsize(9)
        fig.tight_layout()
        path = out / f"scatter_{key}_vs_gfid.png"
        fig.savefig(path)
        plt.close(fig)
        paths[f"scatter_{key}"] = path
    # PCC against gFID(t) as t goes from 0 (rFID itself) to 1 (gFID): the paper's Table 1.
    ts = sorted({float(t) for r in rows for t in r["gfid_t"]})
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key in ("rfid", "ifid", "neg_psnr"):
        per = analysis["correlations"].get(key, {})
        xs, ys = [], []
        for t in [0.0, *ts, 1.0]:
            name = "gfid" if t == 1.0 else f"gfid_t={t:g}"
            if name in per:
                xs.append(t)
                ys.append(per[name]["pearson"]["value"])
        ax.plot(xs, ys, marker="o", label=labels[key])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="t (0 = rFID, 1 = gFID)", ylabel="PCC with gFID(t)", ylim=(-1.05, 1.05))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "pcc_vs_t.png"
    fig.savefig(path)
    plt.close(fig)
    paths["pcc_vs_t"] = path
    return paths


def write_report(
    result: dict[str, Any], out_dir: str | Path, **analyse_kwargs: Any
) -> dict[str, Path]:
    """Write ``results.json`` (everything), ``results.csv`` (per-VAE rows), ``results.md`` (tables)
    and scatter PNGs into ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result["vaes"]
    if len(rows) < 1:
        raise ValueError("the study has no VAE results to report")
    analysis = analyse(rows, **analyse_kwargs)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "markdown": out / "results.md",
    }
    payload = {
        "config": result.get("config"),
        "real": result.get("real"),
        "vaes": rows,
        "analysis": analysis,
    }
    paths["json"].write_text(json.dumps(payload, indent=2, sort_keys=True))
    header, body = _table_rows(rows)
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in body:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    paths["markdown"].write_text(_markdown(result, analysis))
    paths.update(_plots(result, analysis, out))
    return paths
