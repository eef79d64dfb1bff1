"""The study's report as figures: scatter plots of each metric against gFID and PCC against t,
as PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .analysis import METRICS, metric_values

__all__ = ["write_plots"]


def write_plots(result: dict[str, Any], analysis: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["vaes"]
    names = [r["name"] for r in rows]
    gfid = [r["gfid"] for r in rows]
    paths: dict[str, Path] = {}
    labels = dict(METRICS)
    for key in ("rfid", "ifid", "neg_psnr"):
        x = metric_values(rows, key)
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
