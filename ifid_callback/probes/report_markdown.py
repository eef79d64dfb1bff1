"""The study's report as text: the per-VAE table (also the CSV's rows; each gFID with its sampling
standard error and its spread over probe seeds) and the markdown of the analysis (correlations,
iFID against rFID, ablations, paired gFID differences, selection, reliability, noise floors)."""

from __future__ import annotations

import math
from typing import Any

from .analysis import METRICS

__all__ = ["render_markdown", "table_rows"]


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    ts = sorted({float(t) for r in rows for t in r["gfid_t"]})
    header = [
        "VAE",
        "latent",
        "rFID",
        "iFID",
        "PSNR",
        "probe loss",
        "gFID",
        "gFID SE",
        "gFID seed sd",
        "gFID per seed (± SE)",
        "gFID held-out",
        "time shift",
        *[c for t in ts for c in (f"gFID(t={t:g})", f"gFID(t={t:g}) SE")],
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
                r.get("gfid_se"),
                r.get("gfid_seed_std"),
                _per_seed(r),
                r.get("gfid_heldout"),
                "none" if r.get("time_shift") is None else f"{float(r['time_shift']):.3g}",
                *[
                    v
                    for t in ts
                    for v in (r["gfid_t"].get(f"{t:g}"), (r.get("gfid_t_se") or {}).get(f"{t:g}"))
                ],
                irs["irs"],
                irs["irs_inf"],
                f"[{_fmt(irs['irs_inf_low'], 3)}, {_fmt(irs['irs_inf_high'], 3)}]",
            ]
        )
    return header, body


def _per_seed(r: dict[str, Any]) -> str:
    values = r.get("gfid_seeds") or [r["gfid"]]
    ses = r.get("gfid_se_seeds") or [None] * len(values)
    return " / ".join(
        f"{v:.2f}" + ("" if se is None else f" ± {se:.2f}") for v, se in zip(values, ses)
    )


def _pairs_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    if not pairs:
        return []
    lines = [
        "",
        "## gFID: paired differences between neighbouring VAEs",
        "",
        "Each VAE against the one just better in gFID. gFID SE (table above) is the sampling "
        "standard error of the seed mean: the influence-function standard error over the "
        "generated samples, the reference images held fixed: every VAE is scored against the "
        "same reference, so comparisons are conditional on it (its own term, shared by all VAEs, "
        "is `gfid_se_reference` in results.json). Probe seed s of every VAE uses the same "
        "initialisation, batch order, noise, times and sampling noise (common random numbers), "
        "so the difference at each seed is paired sample by sample. *paired SE*: sampling "
        "standard error of the mean difference from those pairs; *seed SE*: std of the per-seed "
        "differences / sqrt(seeds), which also holds the probes' training noise; "
        "*independent SE*: what two unpaired gFIDs would give.",
        "",
        "| VAE | better neighbour | gFID difference | per seed | paired SE | seed SE | "
        "independent SE | same noise |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        per = " / ".join(f"{d:.2f}" for d in p["difference_seeds"])
        lines.append(
            f"| {p['a']} | {p['b']} | {_fmt(p['difference'])} | {per} | "
            f"{_fmt(p['sampling_se'])} | {_fmt(p['seed_se'])} | {_fmt(p['independent_se'])} | "
            f"{'yes' if p['common_noise'] else 'no'} |"
        )
    return lines


def render_markdown(result: dict[str, Any], analysis: dict[str, Any]) -> str:
    rows = result["vaes"]
    header, body = table_rows(rows)
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
    lines += _pairs_markdown(analysis.get("gfid_pairs") or [])
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
