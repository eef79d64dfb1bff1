"""The natural family end to end with tiny settings: 2 recipes x 3 shapes, one probe each and a
second for a third, every VAE at 64 latent values and 4 probe tokens (numbers meaningless)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ifid_callback.probes.family_stats import ragged_paired_difference
from ifid_callback.probes.natural_family import NaturalFamilySettings, run_natural_family
from tests.helpers import RandomFeatures

pytest.importorskip("sklearn")
torch.set_num_threads(1)


def test_natural_family_smoke(tmp_path):
    started = time.time()
    settings = NaturalFamilySettings.smoke(str(tmp_path / "natural"))
    result = run_natural_family(settings, feature=RandomFeatures(64), progress=False, log=None)
    rows = {r["name"]: r for r in result["vaes"]}
    assert len(rows) == 6
    for name, row in rows.items():
        c, h, w = row["latent_shape"]
        assert c * h * w == 64, name
    seeds = [len(r["gfid_seeds"]) for r in result["vaes"]]
    assert sorted(seeds) == [1] * 4 + [2] * 2
    raw = json.loads((tmp_path / "natural" / "results_raw.json").read_text())
    assert set(raw["config"]["groups"]) == {"1x8x8", "4x4x4", "16x2x2", "natural"}
    names = raw["config"]["groups"]["natural"]
    primary = ragged_paired_difference(
        [rows[n]["ifid"] for n in names],
        [rows[n]["rfid"] for n in names],
        [rows[n]["gfid_seeds"] for n in names],
        num_resamples=200,
    )
    assert primary.n == 6 and primary.seed_level
    assert (tmp_path / "natural" / "report" / "results.md").is_file()
    assert time.time() - started < 60
