"""The digits study end to end through the CLI with tiny settings, and its resumption."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ifid_callback.probes.cli import main

pytest.importorskip("sklearn")
torch.set_num_threads(1)


def test_digits_study_smoke_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    started = time.time()
    out = tmp_path / "digits"
    args = ["study", "--dataset", "digits", "--out", str(out), "--smoke", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    first = time.time() - started
    raw = json.loads((out / "results_raw.json").read_text())
    names = [r["name"] for r in raw["vaes"]]
    assert len(names) == 18 and len(set(names)) == 18
    groups = raw["config"]["groups"]
    assert set(groups) == {"A", "B", "A+B", "C"}
    assert len(groups["A"]) == 8 and len(groups["B"]) == 8 and len(groups["A+B"]) == 15
    rows = {r["name"]: r for r in raw["vaes"]}
    # The positive control keeps reconstruction: rFID equal to the base's up to float rounding.
    for name in groups["B"]:
        assert rows[name]["rfid"] == pytest.approx(rows["ae"]["rfid"], rel=1e-6)
        assert rows[name]["latent_shape"] == [4, 4, 4]
    assert [rows[n]["latent_shape"][0] for n in groups["C"]] == [1, 2, 4, 8]
    for r in raw["vaes"]:
        assert len(r["gfid_seeds"]) == 2 and r["time_shift"] is None
        assert set(r["ifid_ablation"]) == {"slerp a=0.3 k=1", "mask a=0.5 k=3"}
    net = raw["feature_network"]
    assert net["heldout_accuracy"] >= 0.97 and "fid_floors" in net
    report = out / "report"
    md = (report / "results.md").read_text()
    assert "Feature network (not Inception)" in md
    assert "# Group B" in md and "rFID is the same for every VAE here" in md
    assert "iFID ablations" in md
    assert "Group A+B" in printed
    saved = json.loads((report / "results.json").read_text())
    assert saved["analysis"]["groups"]["B"]["comparison"]["gfid"]["b_constant"]
    assert "difference_pearson" in saved["analysis"]["groups"]["A+B"]["comparison"]["gfid"]

    # Resumes: a second run finds every stage (and the zoo, and the feature network) cached.
    events = (out / "events.jsonl").read_text().splitlines()
    again = time.time()
    assert main(args) == 0
    assert (out / "events.jsonl").read_text().splitlines() == events
    assert time.time() - again < first
    assert time.time() - started < 180


def test_bad_study_settings_fail_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    args = ["study", "--dataset", "digits", "--out", str(out), "--smoke", "--no-progress"]
    assert main([*args, "--families", "AX"]) == 2
    assert "families must be letters from 'ABC'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main([*args, "--probe-seeds", "0"])
    assert "positive integer" in capsys.readouterr().err
