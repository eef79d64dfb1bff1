"""The companion predictors as opt-in extras: the metric and the monitor report the latent
spectrum and the equivariance error of the iFID encode, equal to the pure functions' values."""

from __future__ import annotations

import math

import pytest
import torch

from ifid_callback import InterpolatedFID
from ifid_callback.functional.equivariance import equivariance_error
from ifid_callback.functional.spectrum import high_frequency_fraction
from tests.test_monitor import EVAL, _batches, _monitor, _vae


def _expected(vae, images):
    with torch.no_grad():
        z = vae.encode(images).mean
        hf = high_frequency_fraction(z)
        eq = equivariance_error(z, images, lambda zz: vae.decode(zz).clamp(-1, 1))
    return float(hf), float(eq)


def test_metric_reports_both_from_the_same_encode_and_nothing_by_default():
    vae = _vae()
    images = EVAL[:8]
    on = InterpolatedFID(
        vae=vae,
        feature=_monitor(vae).metric.feature_net,
        latent_spectrum=True,
        equivariance=True,
    )
    off = InterpolatedFID(vae=vae, feature=on.feature_net)
    for metric in (on, off):
        metric.update(images[:5])
        metric.update(images[5:])
    got, plain = on.compute(), off.compute()
    hf, eq = _expected(vae, images)
    assert float(got["latent_hf_energy"]) == pytest.approx(hf, rel=1e-6)
    assert float(got["equivariance_error"]) == pytest.approx(eq, rel=1e-5)
    assert "latent_hf_energy" not in plain and "equivariance_error" not in plain
    assert float(got["ifid"]) == pytest.approx(float(plain["ifid"]), rel=1e-9)
    assert on.settings["latent_spectrum"] and not off.settings["equivariance"]


def test_monitor_logs_them_when_asked():
    vae = _vae()
    monitor = _monitor(vae, metric_options={"latent_spectrum": True, "equivariance": True})
    for step, x in enumerate(_batches(3), 1):
        monitor.observe(latents=vae.encode(x).mean, step=step)
    result = monitor.evaluate(3)
    hf, eq = _expected(vae, EVAL)
    assert result["latent_hf_energy"] == pytest.approx(hf, rel=1e-6)
    assert result["equivariance_error"] == pytest.approx(eq, rel=1e-5)
    assert 0.0 <= result["latent_hf_energy"] <= 1.0 and math.isfinite(result["equivariance_error"])
