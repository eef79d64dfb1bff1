"""The monitor logs the metric's extras: defaults always, KID and precision/recall on request;
the demo (a real Lightning run) shows iFID +- its standard error and PSNR."""

from __future__ import annotations

import math

import pytest

from ifid_callback import cli
from tests.test_cli import SMOKE
from tests.test_monitor import _batches, _monitor, _vae


def test_monitor_results_hold_the_extras_and_metric_options_add_more():
    vae = _vae()
    plain = _monitor(vae)
    more = _monitor(vae, metric_options={"kid": True, "precision_recall": True})
    for monitor in (plain, more):
        for step, x in enumerate(_batches(3), 1):
            monitor.observe(latents=vae.encode(x).mean, step=step)
    a, b = plain.evaluate(3), more.evaluate(3)
    for key in ("ifid_std", "rfid_std", "psnr", "ssim", "mse"):
        assert math.isfinite(a[key]) and a[key] == pytest.approx(b[key], rel=1e-9), key
    assert "ikid" not in a and "iprecision" not in a
    for key in ("ikid", "ikid_std", "rkid", "rkid_std", "iprecision", "irecall"):
        assert math.isfinite(b[key]), key
    with pytest.raises(ValueError, match=r"metric_options takes .*got \['alpha'\]"):
        _monitor(vae, metric_options={"alpha": 0.3})


def test_demo_table_shows_the_standard_error_and_psnr(tmp_path, capsys):
    pytest.importorskip("lightning")
    argv = ["demo", "--max-steps", "4", "--evals", "2", "--eval-images", "8", "--batch-size", "8"]
    argv += ["--base-channels", "8", "--feature", SMOKE, "--out", str(tmp_path), "--no-progress"]
    argv += ["--part", "monitor"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    rows = [r for r in rows if len(r) >= 8]
    assert [int(r[0]) for r in rows] == [2, 4]
    for r in rows:  # step, loss, val loss, rFID, iFID, +-, SE, PSNR, eval s
        assert r[5] == "+-" and float(r[6]) > 0 and math.isfinite(float(r[7]))
    assert "early-stop with EarlyStopping(monitor='val/ifid', mode='min', min_delta=" in printed
