"""The natural family end to end with tiny settings: 3 recipes x 3 shapes, one probe each and a
second for a third, every VAE at 64 latent values and 4 probe tokens, the companions, the control
pair, the analysis and its report (numbers meaningless)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from ifid_callback.data import EmbeddedDigits
from ifid_callback.functional.equivariance import equivariance_error
from ifid_callback.functional.spectrum import high_frequency_fraction
from ifid_callback.probes.family_stats import ragged_paired_difference
from ifid_callback.probes.natural_companions import loss_curve_area, probe_file
from ifid_callback.probes.natural_family import (
    NaturalFamilySettings,
    publish_natural_family,
    run_natural_family,
)
from ifid_callback.probes.trained_probe import TrainedProbe
from ifid_callback.probes.zoo import load_vae_checkpoint
from tests.helpers import RandomFeatures

pytest.importorskip("sklearn")
torch.set_num_threads(1)


def test_natural_family_smoke(tmp_path):
    started = time.time()
    out = tmp_path / "natural"
    settings = NaturalFamilySettings.smoke(str(out))
    result = run_natural_family(settings, feature=RandomFeatures(64), progress=False, log=None)
    rows = {r["name"]: r for r in result["vaes"]}
    assert len(rows) == 9 and result["dropped"] == {}
    for name, row in rows.items():
        c, h, w = row["latent_shape"]
        assert c * h * w == 64, name
    seeds = [len(r["gfid_seeds"]) for r in result["vaes"]]
    assert sorted(seeds) == [1] * 6 + [2] * 3
    raw = json.loads((out / "results_raw.json").read_text())
    assert set(raw["config"]["groups"]) == {"1x8x8", "4x4x4", "16x2x2", "natural"}
    names = raw["config"]["groups"]["natural"]
    assert (out / "report" / "results.md").is_file()

    # The analysis: the primary test is ragged_paired_difference on the natural VAEs.
    analysis = result["analysis"]
    primary = ragged_paired_difference(
        [rows[n]["ifid"] for n in names],
        [rows[n]["rfid"] for n in names],
        [rows[n]["gfid_seeds"] for n in names],
        num_resamples=settings.num_resamples,
        seed=0,
    ).to_dict()
    assert analysis["n"] == 9
    for key in ("difference", "low", "high"):
        assert analysis["primary"][key] == pytest.approx(primary[key], nan_ok=True)
    assert all(d is not None and d["n"] == 3 for d in analysis["secondary"]["by_shape"].values())
    assert analysis["secondary"]["shape_adjusted"]["n"] == 9
    assert list(analysis["secondary"]["gfid_t"]) == ["0.5"]
    assert result["control"]["vaes"] == ["ae", "ae-shuffle-b2"]
    payload = json.loads(
        (out / "analysis" / "results.json").read_text(), parse_constant=lambda c: 1 / 0
    )
    assert payload["analysis"]["decision"] == analysis["decision"]
    report = (out / "analysis" / "results.md").read_text()
    assert "Decision (pre-registered rule)" in report and "`num_samples`: design 10000" in report
    with pytest.raises(ValueError, match="differs from the design"):
        publish_natural_family(out, tmp_path / "docs")

    # The companions come from the study's own encode: recomputed here from its latents.
    table = {r["name"]: r for r in payload["table"]}
    images = EmbeddedDigits("val").as_tensor()
    for name in ("align0.1-1x8x8", "eq1-4x4x4", "spectral0.1-16x2x2"):
        vae_dir = out / "vaes" / name
        z = torch.from_numpy(np.load(vae_dir / "latents_eval.npy"))
        assert table[name]["latent_hf_energy"] == pytest.approx(
            float(high_frequency_fraction(z)), rel=1e-6
        )
        vae = load_vae_checkpoint(out / "zoo" / f"{name}.ckpt").eval()
        with torch.no_grad():
            err = equivariance_error(z, images, vae.decode)
        assert table[name]["equivariance_error"] == pytest.approx(float(err), rel=1e-5)
        assert table[name]["metric_ifid"] == pytest.approx(rows[name]["ifid"], rel=1e-6)
        areas = [
            loss_curve_area(TrainedProbe.load(probe_file(vae_dir, i)).loss_history)
            for i in range(len(rows[name]["gfid_seeds"]))
        ]
        assert table[name]["probe_loss_area_seeds"] == pytest.approx(areas)
        assert table[name]["probe_loss_area"] == pytest.approx(np.mean(areas))
    assert time.time() - started < 90
