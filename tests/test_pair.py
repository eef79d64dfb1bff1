"""The demo's pair of VAEs (part 2 of `ifid demo`): verdicts, the check's criterion, the pipeline
end to end with tiny budgets, and the committed summary the demo prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ifid_callback.probes import pair as pair_module
from ifid_callback.probes.digits_study import DigitsStudySettings
from ifid_callback.probes.pair import (
    CANDIDATES,
    CONTROL,
    PAIRS,
    check_pairs,
    holds,
    run_pair,
    summarize_check,
    verdict,
    write_check,
)

pytest.importorskip("sklearn")
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    *("rfid", "rfid_std", "ifid", "ifid_std", "psnr"),
    *("gfid", "gfid_std", "gfid_heldout", "gfid_heldout_std"),
)


def _vae(name, rfid, ifid, gfid, se=0.1, seed=0):
    return {"vae": name, "seed": seed, "rfid": rfid, "rfid_std": se, "ifid": ifid,
            "ifid_std": se, "psnr": 30.0, "gfid": gfid, "gfid_heldout": gfid + 10}  # fmt: skip


@pytest.fixture(scope="module")
def quick_feature():
    """A digit classifier trained for one epoch: a valid feature network in a second."""
    from ifid_callback.probes.digit_features import DigitFeatures, DigitRecipe, train_digit_net

    net, info = train_digit_net(DigitRecipe(epochs=1))
    return DigitFeatures(net, {**info, "key": "quick"})


def test_verdict_names_the_metric_the_probe_sides_with():
    a, b = _vae("a", 2.0, 1.0, 10.0), _vae("b", 1.0, 2.0, 20.0)
    v = verdict(a, b)
    assert (v["rfid_prefers"], v["ifid_prefers"], v["gfid_prefers"]) == ("b", "a", "a")
    assert v["disagree"] and v["probe_sides_with"] == "iFID"
    # Gaps b - a in units of the combined standard error sqrt(0.1^2 + 0.1^2).
    assert v["rfid_gap_se"] == pytest.approx(-1.0 / math.hypot(0.1, 0.1))
    assert v["ifid_gap_se"] == pytest.approx(1.0 / math.hypot(0.1, 0.1))
    v = verdict(a, _vae("b", 1.0, 2.0, 5.0))
    assert v["probe_sides_with"] == "rFID"
    v = verdict(a, _vae("b", 3.0, 2.0, 5.0))
    assert not v["disagree"] and v["probe_sides_with"] is None


def test_equal_rfid_up_to_rounding_is_a_tie_not_a_preference():
    a = _vae("a", 1.1800001, 1.7, 22.0)
    b = _vae("b", 1.1800000, 8.3, 55.0)
    v = verdict(a, b)
    assert v["rfid_prefers"] is None and not v["disagree"] and v["probe_sides_with"] is None
    assert v["ifid_prefers"] == v["gfid_prefers"] == "a"
    assert verdict(a, _vae("b", 1.19, 8.3, 55.0))["rfid_prefers"] == "a"


def test_holds_needs_every_seed():
    good = {"verdict": verdict(_vae("a", 2, 1, 10), _vae("b", 1, 2, 20))}
    probe_for_rfid = {"verdict": verdict(_vae("a", 2, 1, 30), _vae("b", 1, 2, 20))}
    agree = {"verdict": verdict(_vae("a", 1, 1, 10), _vae("b", 2, 2, 20))}
    assert holds([good, good, good])
    assert not holds([good, probe_for_rfid, good])
    assert not holds([good, agree])
    assert not holds([])
    tie = {"verdict": verdict(_vae("a", 1, 1, 10), _vae("b", 1, 2, 20))}
    flipped = {"verdict": verdict(_vae("a", 1, 1, 30), _vae("b", 1, 2, 20))}
    assert holds([tie, tie], control=True)
    assert not holds([tie, flipped], control=True)


def test_summary_is_the_mean_and_sample_std_over_seeds():
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(4):
        a = _vae("a", *rng.uniform(1, 3, 3), seed=seed)
        b = _vae("b", *rng.uniform(1, 3, 3), seed=seed)
        runs.append({"seed": seed, "vaes": [a, b], "verdict": verdict(a, b)})
    check = {"pairs": {"p": {"vaes": ["a", "b"], "runs": runs, "holds": holds(runs)}}}
    summary = summarize_check(check, "p")
    for i, name in enumerate("ab"):
        for key in ("rfid", "ifid", "gfid"):
            values = [r["vaes"][i][key] for r in runs]
            assert summary["vaes"][name][key]["mean"] == pytest.approx(np.mean(values))
            assert summary["vaes"][name][key]["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["disagree"] == sum(r["verdict"]["disagree"] for r in runs)
    assert summary["seeds"] == 4


def test_pair_end_to_end_is_the_same_in_one_process_or_two(tmp_path, quick_feature):
    settings = DigitsStudySettings.smoke(str(tmp_path / "one"))
    one = run_pair("noise-vs-align1", 1, settings, feature=quick_feature, workers=1)
    two = run_pair(
        "noise-vs-align1",
        1,
        DigitsStudySettings.smoke(str(tmp_path / "two")),
        feature=quick_feature,
        workers=2,
    )
    assert [r["vae"] for r in one["vaes"]] == list(PAIRS["noise-vs-align1"])
    for r1, r2 in zip(one["vaes"], two["vaes"], strict=True):
        for key in FIGURES:
            assert math.isfinite(r1[key]) and r1[key] == r2[key], key
    assert one["verdict"] == two["verdict"]
    for r in one["vaes"]:  # gFID's sampling standard error, as every probe gFID has
        assert 0 < r["gfid_std"] < r["gfid"] and r["num_samples"] == settings.num_samples
    assert math.isfinite(one["verdict"]["gfid_gap_se"])
    # Cached: a repeated call returns the stored result without training again.
    cached = tmp_path / "one" / "seed1" / "kl1e-3-noise0.3.json"
    assert json.loads(cached.read_text())["result"] == one["vaes"][0]
    again = run_pair("noise-vs-align1", 1, settings, feature=quick_feature, workers=1)
    assert again["vaes"] == one["vaes"]
    # Another seed re-seeds everything: other weights, other numbers.
    other = run_pair("noise-vs-align1", 2, settings, feature=quick_feature, workers=1)
    assert other["vaes"][0]["gfid"] != one["vaes"][0]["gfid"]


def test_positive_control_keeps_rfid_and_the_check_writes_its_report(tmp_path, quick_feature):
    settings = DigitsStudySettings.smoke(str(tmp_path))
    check = check_pairs(
        [0, 1], settings, pairs=[CONTROL], feature=quick_feature, workers=1, log=None
    )
    for run in check["pairs"][CONTROL]["runs"]:
        base, shuffled = run["vaes"]
        assert shuffled["rfid"] == pytest.approx(base["rfid"], rel=1e-6)
        assert shuffled["psnr"] == pytest.approx(base["psnr"], rel=1e-6)
        assert run["verdict"]["rfid_prefers"] is None
    assert check["shown"] == CONTROL  # no natural candidate was run, so none held
    paths = write_check(check, tmp_path / "report")
    summary = json.loads(paths["summary"].read_text())
    assert summary["shown"] == CONTROL and summary["seeds"] == [0, 1]
    assert summary["summary"]["seeds"] == 2
    assert "### `control`" in paths["markdown"].read_text()


def test_pair_check_cli(tmp_path, monkeypatch, quick_feature, capsys):
    from ifid_callback.probes import cli

    monkeypatch.setattr(pair_module, "_default_feature", lambda feature: quick_feature)
    args = ["pair-check", "--smoke", "--seeds", "3", "--pairs", "control", "--workers", "1"]
    assert cli.main([*args, "--out", str(tmp_path), "--report", str(tmp_path / "r")]) == 0
    assert "### `control`" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "results.md",
        "results.json",
        "summary.json",
    }
    assert cli.main(["pair-check", "--pairs", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown pairs ['nope']" in capsys.readouterr().err


def test_the_demo_prints_the_pair_with_its_noise_and_verdict(tmp_path, monkeypatch, capsys):
    from ifid_callback import cli
    from ifid_callback.probes import digit_features

    quick = digit_features.DigitFeatures(
        *digit_features.train_digit_net(digit_features.DigitRecipe(epochs=1))
    )
    monkeypatch.setattr(digit_features, "digit_features", lambda: quick)
    argv = ["demo", "--part", "pair", "--pair-smoke", "--pair-workers", "1"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    check = json.loads((ROOT / "ifid_callback" / "demo_pair_check.json").read_text())
    for name in PAIRS[check["shown"]]:
        assert name in printed
    assert "rFID +- SE" in printed and "gFID +- SE" in printed
    assert "iFID prefers" in printed and "gFID prefers" in printed
    # Every pair of the committed check, with its verdict and counts, whichever is shown.
    for name in (*CANDIDATES, CONTROL):
        label = " vs ".join(PAIRS[name])
        line = next(r for r in printed.splitlines() if r.strip().split(":")[0].startswith(label))
        counts = check["counts"][name]
        assert ("holds" if counts["holds"] else "fails") in line
        assert f"iFID prefers in {counts['ifid_matches_gfid']}/{counts['seeds']}" in line
    with pytest.raises(ValueError, match="--pair-workers"):
        from ifid_callback.demo import main as demo_main

        demo_main(["--pair-workers", "0"])


def test_the_packaged_summary_is_the_committed_check():
    """The demo prints the committed check's figures: they must be that check's, run with the
    demo's recipe and feature network."""
    from ifid_callback.demo_pair import committed_check
    from ifid_callback.probes.digit_features import DigitRecipe

    packaged = committed_check()
    docs = ROOT / "docs" / "results" / "digits" / "pair" / "summary.json"
    assert packaged == json.loads(docs.read_text())
    assert packaged["recipe"] == pair_module._recipe_key(DigitsStudySettings(out="x"))
    assert packaged["feature_key"] == DigitRecipe().key()
    assert len(packaged["seeds"]) >= 3
    held = [p for p in CANDIDATES if packaged["holds"][p]]
    assert packaged["shown"] == (held[0] if held else CONTROL)
    full = json.loads((docs.parent / "results.json").read_text())
    assert full["summaries"][packaged["shown"]] == packaged["summary"]
