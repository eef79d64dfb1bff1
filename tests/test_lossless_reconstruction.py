"""A pixel-exact reconstruction: PSNR is +inf (lossless), which the monitor reports and logs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ifid_callback.monitor.evaluation import scalar_metrics
from tests.test_monitor import _batches, _monitor


class IdentityVAE(nn.Module):
    """Latents are the images themselves: every reconstruction is pixel-exact."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so the monitor finds a device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale


def test_identity_vae_evaluates_with_infinite_psnr_and_zero_mse():
    vae = IdentityVAE()
    monitor = _monitor(vae)
    for step, x in enumerate(_batches(3), 1):
        monitor.observe(latents=vae.encode(x).detach(), step=step)
    result = monitor.evaluate(3)
    assert result["psnr"] == math.inf
    assert result["mse"] == 0.0
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isfinite(result["ifid"]) and math.isfinite(result["rfid"])


def test_scalar_metrics_keeps_plus_inf_psnr_and_rejects_the_rest():
    assert scalar_metrics({"psnr": torch.tensor(math.inf)})["psnr"] == math.inf
    for key, value in (
        ("psnr", math.nan),
        ("psnr", -math.inf),
        ("ifid", math.inf),
        ("mse", math.nan),
    ):
        with pytest.raises(ValueError, match=rf"^{key} is "):
            scalar_metrics({key: torch.tensor(value, dtype=torch.float64)})


def test_loggers_write_an_infinite_psnr(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv = CSVLogger(tmp_path, name="csv")
    csv.log_metrics({"val/psnr": math.inf, "val/ifid": 1.5}, step=3)
    csv.save()
    text = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "inf" in text
    board = TensorBoardLogger(tmp_path, name="tb")
    board.log_metrics({"val/psnr": math.inf}, step=3)
    board.finalize("success")
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
