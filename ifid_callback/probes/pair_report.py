"""The pair check in words and tables: the demo's table for one run of a pair, the check's
markdown report, and the summary the demo reads (``docs/results/digits/pair/summary.json``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .pair_verdict import CONTROL, summarize_check

__all__ = ["demo_summary", "format_check", "format_pair", "outcome_sentence", "write_check"]


def format_pair(result: dict[str, Any], spread: dict[str, Any] | None = None) -> str:
    """The demo's table for one run of a pair, and its verdict in words.

    ``spread`` (from :func:`summarize_check`) adds each figure's standard deviation over the
    committed check's seeds: the noise of re-running everything with another seed.
    """

    def pm(value: float, err: float) -> str:
        return f"{value:.2f} +- {err:.2f}" if math.isfinite(err) else f"{value:.2f}"

    def row(name: str, cells: Sequence[str]) -> str:
        widths = (15, 15, 7, 15, 13)
        return f"{name:<18}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths))

    lines = [
        row("VAE", ("rFID +- SE", "iFID +- SE", "PSNR dB", "gFID +- SE", "gFID held-out")),
        row("-" * 18, ["-" * w for w in (15, 15, 7, 15, 13)]),
    ]
    for r in result["vaes"]:
        lines.append(
            row(
                r["vae"],
                (
                    pm(r["rfid"], r["rfid_std"]),
                    pm(r["ifid"], r["ifid_std"]),
                    f"{r['psnr']:.2f}",
                    pm(r["gfid"], r.get("gfid_std", math.nan)),
                    f"{r['gfid_heldout']:.2f}",
                ),
            )
        )
    if spread is not None:
        lines.append(
            f"std over the {spread['seeds']} seeds of the committed check (the noise of "
            "re-running everything with another seed):"
        )
        for name, stats in spread["vaes"].items():
            keys = ("rfid", "ifid", "psnr", "gfid", "gfid_heldout")
            lines.append(row(name, [f"{stats[k]['std']:.2f}" for k in keys]))
    a, b = result["vaes"]
    v = result["verdict"]
    lines.append("")
    lines.append(_sentence("rFID", v["rfid_prefers"], a, b, "rfid"))
    lines.append(_sentence("iFID", v["ifid_prefers"], a, b, "ifid"))
    lines.append(_sentence("gFID", v["gfid_prefers"], a, b, "gfid"))
    if v["disagree"]:
        lines.append(
            f"rFID and iFID disagree; the diffusion probe sides with {v['probe_sides_with']}."
        )
    elif v["rfid_prefers"] is None:
        agree = v["ifid_prefers"] == v["gfid_prefers"]
        lines.append(
            "rFID cannot tell them apart; the diffusion probe "
            + ("agrees with iFID." if agree else "disagrees with iFID.")
        )
    else:
        lines.append("In this run rFID and iFID prefer the same VAE.")
    return "\n".join(lines)


def _pm(r: dict[str, Any], key: str) -> str:
    err = r.get(f"{key}_std", math.nan)  # absent in results measured before gFID had one
    return f"{r[key]:.2f} +- {err:.2f}" if math.isfinite(err) else f"{r[key]:.2f}"


def _sentence(label: str, preferred: str | None, a: dict, b: dict, key: str) -> str:
    if preferred is None:
        return f"{label}: a tie ({a[key]:.2f} and {b[key]:.2f})."
    best, other = (a, b) if preferred == a["vae"] else (b, a)
    return f"{label} prefers {best['vae']} ({best[key]:.2f} vs {other[key]:.2f})."


def outcome_sentence(summary: dict[str, Any]) -> str:
    """``"holds: ..."`` or ``"fails: ..."``: the criterion on a pair over the check's seeds, with
    its counts (``summary`` from :func:`summarize_check`)."""
    n, verdict_word = summary["seeds"], "holds" if summary["holds"] else "fails"
    tail = (
        f"gFID prefers the VAE that iFID prefers in {summary['ifid_matches_gfid']}/{n} seeds and "
        f"the one that rFID prefers in {summary['rfid_matches_gfid']}/{n} (a tie counts for "
        "neither)"
    )
    if summary["pair"] == CONTROL:
        return f"{verdict_word} (rFID equal by construction): {tail}."
    return (
        f"{verdict_word}: rFID and iFID disagree in {summary['disagree']}/{n} seeds, and gFID "
        f"sides with iFID in {summary['sided_with_ifid']} of them; {tail}."
    )


def format_check(check: dict[str, Any]) -> str:
    """The check as markdown: per pair, a row per seed and VAE, the per-VAE mean +- std over
    seeds, and whether the criterion held."""
    lines = [
        f"Seeds: {', '.join(str(s) for s in check['seeds'])}. Shown by the demo: "
        f"**{check['shown']}**.",
        "",
    ]
    for pair, entry in check["pairs"].items():
        a, b = entry["vaes"]
        summary = summarize_check(check, pair)
        kind = "positive control" if pair == CONTROL else "natural candidate"
        lines += [f"### `{pair}`: `{a}` vs `{b}` ({kind})", ""]
        lines += [f"Criterion {outcome_sentence(summary)}", ""]
        lines += [
            "| seed | VAE | rFID +- SE | iFID +- SE | PSNR dB | gFID (+- SE) | gFID held-out | "
            "probe prefers |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in entry["runs"]:
            v = run["verdict"]
            side = v["probe_sides_with"] or ("(no disagreement)" if not v["disagree"] else "")
            for r in run["vaes"]:
                lines.append(
                    f"| {run['seed']} | `{r['vae']}` | {r['rfid']:.2f} +- {r['rfid_std']:.2f} | "
                    f"{r['ifid']:.2f} +- {r['ifid_std']:.2f} | {r['psnr']:.2f} | "
                    f"{_pm(r, 'gfid')} | {r['gfid_heldout']:.2f} | "
                    f"{side if r is run['vaes'][0] else ''} |"
                )
        lines += [
            "",
            "| VAE | rFID | iFID | PSNR dB | gFID | gFID held-out |",
            "|---|---|---|---|---|---|",
        ]
        for name, stats in summary["vaes"].items():
            cells = " | ".join(
                f"{stats[k]['mean']:.2f} +- {stats[k]['std']:.2f}"
                for k in ("rfid", "ifid", "psnr", "gfid", "gfid_heldout")
            )
            lines.append(f"| `{name}` (mean +- std over seeds) | {cells} |")
        lines.append("")
    return "\n".join(lines)


def write_check(check: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.md`` (:func:`format_check`) and ``results.json`` (the check, with each
    pair's :func:`summarize_check`) into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**check, "summaries": {p: summarize_check(check, p) for p in check["pairs"]}}
    paths = {
        "markdown": out / "results.md",
        "json": out / "results.json",
        "summary": out / "summary.json",
    }
    paths["markdown"].write_text(format_check(check) + "\n")
    paths["json"].write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    paths["summary"].write_text(json.dumps(demo_summary(check), indent=2, sort_keys=True) + "\n")
    return paths


def demo_summary(check: dict[str, Any]) -> dict[str, Any]:
    """What the demo needs of a check: the pair it shows, whether each pair held, the recipe and
    feature network it ran with, and the shown pair's :func:`summarize_check`."""
    return {
        "seeds": list(check["seeds"]),
        "shown": check["shown"],
        "holds": {p: entry["holds"] for p, entry in check["pairs"].items()},
        "recipe": check["recipe"],
        "feature_key": check["feature_network"].get("key"),
        "summary": summarize_check(check, check["shown"]),
        "counts": {
            p: {k: v for k, v in summarize_check(check, p).items() if k != "vaes"}
            for p in check["pairs"]
        },
    }
