"""The study's report: correlation of each VAE metric with gFID and gFID(t), selection regret,
and the per-VAE table, as JSON, CSV, markdown and scatter-plot PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
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

__all__ = ["CONSTANT_RTOL", "METRICS", "analyse", "compare_predictors", "write_report"]

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


def _metric_values(rows: list[dict[str, Any]], key: str) -> list[float]:
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
    xa = _metric_values(rows, a)
    xb = _metric_values(rows, b)
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
        "gFID per seed",
        "gFID held-out",
        "time shift",
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
                " / ".join(f"{v:.2f}" for v in r.get("gfid_seeds") or [r["gfid"]]),
                r.get("gfid_heldout"),
                "none" if r.get("time_shift") is None else f"{float(r['time_shift']):.3g}",
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
        "Pearson (PCC) and Spearman (SRCC) with 95% bootstrap intervals over the VAEs (probe "
        "seeds resampled within each VAE where a target has several); "
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
    lines += _comparison_markdown(analysis.get("comparison") or {})
    lines += _ablation_markdown(analysis.get("ablation") or {}, "all VAEs")
    for group, g in (analysis.get("groups") or {}).items():
        lines += ["", f"# Group {group}: {', '.join(g['members'])}"]
        lines += _comparison_markdown(g["comparison"], f" (group {group})")
        lines += _ablation_markdown(g["ablation"], f"group {group}")
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
    net = result.get("feature_network") or {}
    if net:
        floors = net.get("fid_floors") or {}
        lines += [
            "",
            "## Feature network (not Inception)",
            "",
            "Every FID here is measured in the penultimate layer of a small convolutional digit "
            "classifier trained on the training split, not in Inception-v3: the numbers compare "
            "with each other only.",
            "",
            f"- accuracy: {_fmt(100 * net.get('heldout_accuracy', math.nan), 1)}% on the "
            f"held-out digits, {_fmt(100 * net.get('train_accuracy', math.nan), 1)}% on the "
            "training digits",
        ]
        if floors:
            lines += [
                f"- FID floors: held-out ({floors['n_heldout']}) vs train ({floors['n_train']}) "
                f"{_fmt(floors['heldout_vs_train'])}; train half vs half "
                f"{_fmt(floors['train_half_vs_half'])}; held-out half vs half "
                f"{_fmt(floors['heldout_half_vs_half'])}",
            ]
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


def _ablation_markdown(ablation: dict[str, Any], where: str) -> list[str]:
    if not ablation:
        return []
    lines = [
        "",
        f"## iFID ablations: correlation with gFID ({where})",
        "",
        "| iFID setting | PCC [95% CI] | SRCC [95% CI] |",
        "|---|---|---|",
    ]
    for label, c in ablation.items():
        p, q = c["pearson"], c["spearman"]
        lines.append(
            f"| {label} | {_fmt(p['value'])} [{_fmt(p['low'])}, {_fmt(p['high'])}] | "
            f"{_fmt(q['value'])} [{_fmt(q['low'])}, {_fmt(q['high'])}] |"
        )
    return lines


def _comparison_markdown(comparison: dict[str, Any], where: str = "") -> list[str]:
    """The section that answers the question: iFID against rFID as predictors of gFID."""
    lines: list[str] = []
    for target, c in comparison.items():
        if "skipped" in c:
            continue
        level = (
            "VAEs resampled, and probe seeds resampled within each VAE"
            if c["seed_level"]
            else "VAEs resampled"
        )
        lines += [
            "",
            f"## iFID against rFID as predictors of {target}{where}",
            "",
            f"n = {c['n']} VAEs; 95% intervals from a paired bootstrap ({level}).",
            "",
            "| statistic | Pearson | Spearman |",
            "|---|---|---|",
        ]
        for key, label in ((c["a"], "corr(iFID, target)"), (c["b"], "corr(rFID, target)")):
            if f"{key}_pearson" not in c:
                const = c["b_constant"]
                lines.append(
                    f"| {label} | rFID constant ({_fmt(const['value'])}, relative spread "
                    f"{const['relative_spread']:.1e}) | — |"
                )
                continue
            p, q = c[f"{key}_pearson"], c[f"{key}_spearman"]
            lines.append(
                f"| {label} | {_fmt(p['value'])} [{_fmt(p['low'])}, {_fmt(p['high'])}] | "
                f"{_fmt(q['value'])} [{_fmt(q['low'])}, {_fmt(q['high'])}] |"
            )
        if "b_constant" in c:
            lines += [
                "",
                "- rFID is the same for every VAE here (by construction), so the question is "
                "only whether iFID moves with the target.",
            ]
            continue
        p, q = c["difference_pearson"], c["difference_spearman"]
        lines.append(
            f"| difference iFID - rFID | {_fmt(p['difference'])} [{_fmt(p['low'])}, "
            f"{_fmt(p['high'])}], P(>0) {_fmt(p['prob_positive'])} | "
            f"{_fmt(q['difference'])} [{_fmt(q['low'])}, {_fmt(q['high'])}], "
            f"P(>0) {_fmt(q['prob_positive'])} |"
        )
        lines.append("")
        if "williams" in c:
            w = c["williams"]
            lines.append(
                f"- Williams' test (Steiger 1980) of equal Pearson correlations: t = "
                f"{_fmt(w['t'])}, df = {w['df']}, p = {_fmt(w['p_value'], 3)} "
                f"(corr(iFID, rFID) = {_fmt(w['r23'])})."
            )
        pc = c["partial"]
        lines.append(
            f"- Partial correlation of iFID with {target} given rFID: {_fmt(pc['value'])} "
            f"[{_fmt(pc['low'])}, {_fmt(pc['high'])}], p = {_fmt(pc['p_value'], 3)}."
        )
        if "per_seed_pearson" in c:
            per = c["per_seed_pearson"]
            lines.append(
                "- Pearson per probe seed: iFID "
                + ", ".join(_fmt(v) for v in per[c["a"]])
                + "; rFID "
                + ", ".join(_fmt(v) for v in per[c["b"]])
                + f". Mean std of {target} between seeds {_fmt(c['mean_seed_spread'])}, "
                f"std across VAEs {_fmt(c['spread_across_vaes'])}."
            )
    return lines


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
    groups = (result.get("config") or {}).get("groups") or None
    analysis = analyse(rows, groups=groups, **analyse_kwargs)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "markdown": out / "results.md",
    }
    payload = {
        **{k: v for k, v in result.items() if k not in ("report", "vaes")},
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
