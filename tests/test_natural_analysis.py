"""The natural family's analysis, report and publishing on hand-made tables; the probe's
loss-curve area by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from ifid_callback.probes.natural_analysis import (
    analyse_natural_family,
    decision,
    format_natural_report,
    strict_json,
    write_natural_report,
)
from ifid_callback.probes.natural_companions import loss_curve_area
from ifid_callback.probes.natural_family import NaturalFamilySettings, publish_natural_family


def test_loss_curve_area_by_hand():
    # Trapezoids (2 + 1) / 2 * 100 = 150 and (1 + 0.5) / 2 * 200 = 150 over steps 100..400.
    assert loss_curve_area([(100, 2.0), (200, 1.0), (400, 0.5)]) == pytest.approx(1.0)
    # A constant curve's mean is the constant; one point is its own loss.
    assert loss_curve_area([(0, 0.3), (7, 0.3), (9, 0.3)]) == pytest.approx(0.3)
    assert loss_curve_area([(50, 1.25)]) == 1.25
    # The last partial interval counts for its length only.
    history = [(50, 4.0), (100, 2.0), (150, 1.0), (160, 3.0)]
    steps, losses = np.array(history).T
    assert loss_curve_area(history) == pytest.approx(np.trapezoid(losses, steps) / 110)
    assert np.isnan(loss_curve_area([(1, 1.0), (2, float("nan"))]))
    with pytest.raises(ValueError, match="empty"):
        loss_curve_area([])
    with pytest.raises(ValueError, match="increase strictly"):
        loss_curve_area([(10, 1.0), (10, 2.0)])


def _table(n: int = 12, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes = ["1x8x8", "4x4x4", "16x2x2"]
    rows = []
    for i in range(n):
        g = float(10 + i)
        seeds = [g + rng.normal(0, 0.3)] + ([g + rng.normal(0, 0.3)] if i % 3 == 0 else [])
        ifid = g + rng.normal(0, 0.5)
        rows.append(
            {
                "name": f"r{i}-{shapes[i % 3]}",
                "recipe": f"r{i}",
                "shape": shapes[i % 3],
                "ifid": ifid,
                "rfid": float(rng.normal(5, 1)),
                "psnr": float(rng.normal(20, 1)),
                "neg_psnr": 0.0,
                "gfid": float(np.mean(seeds)),
                "gfid_seeds": seeds,
                "gfid_heldout_seeds": [s + 1 for s in seeds],
                "gfid_t_seeds": {"0.3": [s / 2 for s in seeds], "0.6": [-s for s in seeds]},
                "latent_hf_energy": float(rng.random()),
                "equivariance_error": float(rng.random()),
                "probe_loss_area": float(rng.random()),
                "probe_loss_area_seeds": [0.1] * len(seeds),
                "metric_ifid": ifid + 1e-12,
                "metric_rfid": 0.0,
            }
        )
        rows[-1]["neg_psnr"] = -rows[-1]["psnr"]
        rows[-1]["metric_rfid"] = rows[-1]["rfid"]
    return rows


def test_decision_rule_as_pre_registered():
    assert decision({"low": 0.01, "high": 0.5}, 48).startswith("iFID ranks")
    assert decision({"low": -0.5, "high": -0.01}, 48).startswith("rFID ranks")
    assert decision({"low": -0.1, "high": 0.3}, 48) == (
        "no difference of this size is detectable with 48 VAEs"
    )


def test_analysis_on_a_family_where_ifid_tracks_gfid():
    table = _table()
    got = analyse_natural_family(table, num_resamples=300, miss_places=2)
    y = [np.mean(r["gfid_seeds"]) for r in table]
    expected = (
        scipy.stats.spearmanr([r["ifid"] for r in table], y)[0]
        - scipy.stats.spearmanr([r["rfid"] for r in table], y)[0]
    )
    assert got["primary"]["difference"] == pytest.approx(expected)
    assert got["primary"]["low"] > 0 and got["decision"].startswith("iFID ranks")
    sec = got["secondary"]
    assert set(sec["by_shape"]) == {"1x8x8", "4x4x4", "16x2x2"}
    assert all(d["n"] == 4 for d in sec["by_shape"].values())
    assert sec["shape_adjusted"]["method"] == "stratified-spearman"
    assert sec["pearson"]["method"] == "pearson"
    # gFID(t=0.6) is minus gFID: the difference flips sign.
    assert sec["gfid_t"]["0.6"]["difference"] == pytest.approx(-expected)
    assert sec["heldout"]["difference"] == pytest.approx(expected)
    assert set(got["companions"]) == {
        "ifid", "rfid", "latent_hf_energy", "equivariance_error", "probe_loss_area", "neg_psnr"
    }  # fmt: skip
    assert set(got["partial"]) == {
        "latent_hf_energy|ifid", "equivariance_error|ifid", "probe_loss_area|ifid",
        "neg_psnr|ifid", "ifid|rfid",
    }  # fmt: skip
    assert got["noise"]["vaes_with_seeds"] == 4
    assert got["metric_check"]["max_abs_ifid_difference"] < 1e-9


def test_misses_by_hand():
    table = _table(6)
    for row, g, i in zip(table, [1, 2, 3, 4, 5, 6], [6, 2, 3, 4, 5, 1], strict=True):
        row["gfid_seeds"] = [float(g)] * len(row["gfid_seeds"])
        row["gfid"] = float(g)
        row["ifid"] = float(i)
    misses = analyse_natural_family(table, num_resamples=50, miss_places=3)["misses"]
    assert [(m["name"], m["ifid_minus_gfid_rank"]) for m in misses["vaes"]] == [
        ("r0-1x8x8", 5.0),
        ("r5-16x2x2", -5.0),
    ]


def _payload(analysis, control_holds=True, differences=None):
    table = _table()
    return {
        "settings": {},
        "design_differences": differences or {},
        "dropped": {"kl3e-1-16x2x2": "training diverged (loss became nan)"},
        "control": {
            "vaes": ["ae", "ae-shuffle-b2"],
            "seed": 0,
            "rfid": [1.0, 1.0],
            "ifid": [2.0, 3.0],
            "gfid": [4.0, 5.0],
            "ifid_prefers": "ae",
            "gfid_prefers": "ae" if control_holds else "ae-shuffle-b2",
            "holds": control_holds,
        },
        "analysis": analysis,
        "table": table,
    }


def test_report_and_publish(tmp_path):
    analysis = analyse_natural_family(_table(), num_resamples=100)
    text = format_natural_report(strict_json(_payload(analysis)))
    assert "Decision (pre-registered rule): iFID ranks natural VAEs" in text
    assert "Dropped `kl3e-1-16x2x2`" in text and "**holds**" in text
    assert "None: the run used the pre-registered settings, as amended before the run" in text
    failed = format_natural_report(strict_json(_payload(None, control_holds=False)))
    assert "**Not analysed:**" in failed and "Decision" not in failed

    out = tmp_path / "run"
    paths = write_natural_report(out / "analysis", _payload(analysis))
    data = json.loads(paths["json"].read_text(), parse_constant=lambda c: 1 / 0)  # strict JSON
    assert data["analysis"]["decision"] == analysis["decision"]
    assert paths["csv"].read_text().count("\n") == 13
    dest = tmp_path / "docs"
    dest.mkdir()
    (dest / "DESIGN.md").write_text("design")
    written = publish_natural_family(out, dest)
    assert sorted(p.name for p in written) == ["README.md", "results.json", "vaes.csv"]
    assert (dest / "README.md").read_text() == paths["markdown"].read_text()
    assert (dest / "DESIGN.md").read_text() == "design"

    smoke = NaturalFamilySettings.smoke(str(tmp_path / "smoke"))
    write_natural_report(
        tmp_path / "smoke" / "analysis",
        _payload(analysis, differences=smoke.design_differences()),
    )
    with pytest.raises(ValueError, match="differs from the design"):
        publish_natural_family(tmp_path / "smoke", dest)
    assert NaturalFamilySettings(out="x").design_differences() == {}
    assert "num_samples" in smoke.design_differences()
