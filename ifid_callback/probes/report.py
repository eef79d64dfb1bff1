"""The study's report: the analysis (:mod:`~ifid_callback.probes.analysis`) of the per-VAE results
and the paired gFID differences between them (:mod:`~ifid_callback.probes.gfid_pairs`), written as
JSON, CSV, markdown (:mod:`~ifid_callback.probes.report_markdown`) and scatter-plot PNGs
(:mod:`~ifid_callback.probes.report_plots`). :func:`analyse`, :func:`compare_predictors`,
:data:`METRICS` and :data:`CONSTANT_RTOL` are importable from here too."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .analysis import CONSTANT_RTOL, METRICS, analyse, compare_predictors
from .gfid_pairs import paired_gfid_table
from .report_markdown import render_markdown, table_rows
from .report_plots import write_plots

__all__ = ["CONSTANT_RTOL", "METRICS", "analyse", "compare_predictors", "write_report"]


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
    # Neighbours in gFID order, differenced over the same probe seeds and sample noise.
    analysis["gfid_pairs"] = paired_gfid_table(rows, (result.get("config") or {}).get("out_dir"))
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
    header, body = table_rows(rows)
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in body:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    paths["markdown"].write_text(render_markdown(result, analysis))
    paths.update(write_plots(result, analysis, out))
    return paths
