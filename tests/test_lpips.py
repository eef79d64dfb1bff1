"""LPIPS of the reconstructions, opt-in: a given network, or the standard one from local files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ifid_callback import InterpolatedFID, LatentBank, perceptual
from tests.helpers import RandomFeatures
from tests.test_monitor import EVAL, IN_DIM, _batches, _monitor, _vae


class MeanAbs(nn.Module):
    """A stand-in distance: mean absolute difference per image, (B, 1, 1, 1) like lpips.LPIPS.

    Its dropout makes it differ in train mode, so a test sees whether it ran in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
        self.drop = nn.Dropout(0.5)

    def forward(self, recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        diff = self.drop((recon - images).abs().to(torch.float64))
        return (self.weight * diff).mean(dim=(1, 2, 3), keepdim=True)


def _metric(vae, **kwargs):
    bank = LatentBank(64)
    bank.add(torch.cat([vae.encode(x).mean for x in _batches(2)]).detach())
    return InterpolatedFID(vae=vae, feature=RandomFeatures(IN_DIM), bank=bank, **kwargs)


def test_lpips_is_the_mean_of_the_network_over_the_reconstructions():
    vae = _vae()
    net = MeanAbs().train()
    metric = _metric(vae, lpips=net)
    for x in EVAL.split(10):  # batches of 10, 10 and 4
        metric.update(x)
    out = metric.compute()
    with torch.no_grad():
        recon = vae.decode(vae.encode(EVAL).mean).clamp(-1, 1)
        expected = (2.0 * (recon - EVAL).abs().to(torch.float64)).mean(dim=(1, 2, 3)).mean()
    assert float(out["lpips"]) == pytest.approx(float(expected), rel=1e-6)
    assert net.training  # run in eval mode, then put back
    assert metric.settings["lpips"] == "MeanAbs"
    assert not any("lpips_net" in key for key in metric.state_dict())
    plain = _metric(vae)
    plain.update(EVAL)
    assert "lpips" not in plain.compute() and plain.settings["lpips"] is None


def test_lpips_accepts_a_plain_callable_with_b_outputs():
    vae = _vae()

    def l1(recon, images):
        return (recon - images).abs().flatten(1).mean(1)

    metric = _metric(vae, lpips=l1, reconstruction_metrics=False)
    metric.update(EVAL)
    out = metric.compute()
    assert math.isfinite(float(out["lpips"])) and float(out["lpips"]) > 0
    assert "psnr" not in out


def test_lpips_true_without_local_files_says_how_to_enable_it(monkeypatch, tmp_path):
    backbone = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    monkeypatch.setattr(
        perceptual,
        "standard_lpips_files",
        lambda: {"package": None, "linear": None, "backbone": backbone},
    )
    with pytest.raises(FileNotFoundError) as info:
        _metric(_vae(), lpips=True)
    text = str(info.value)
    assert "never downloads" in text and "pip install lpips" in text
    assert str(backbone) in text and "alexnet-owt-7be5be79.pth" in text
    assert "lpips=<module>" in text
    # Package present but the backbone missing: only the backbone is asked for.
    package = tmp_path / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "weights" / "v0.1" / "alex.pth").write_bytes(b"")
    monkeypatch.setattr(
        perceptual,
        "standard_lpips_files",
        lambda: {
            "package": package,
            "linear": package / "weights" / "v0.1" / "alex.pth",
            "backbone": backbone,
        },
    )
    with pytest.raises(FileNotFoundError, match="place torchvision's AlexNet weights") as info:
        _metric(_vae(), lpips=True)
    assert "pip install" not in str(info.value)


def test_standard_lpips_files_point_at_the_torch_hub_cache():
    files = perceptual.standard_lpips_files()
    assert files["backbone"] == Path(torch.hub.get_dir()) / "checkpoints" / (
        "alexnet-owt-7be5be79.pth"
    )


def test_lpips_argument_validation():
    vae = _vae()
    for bad in ("alex", 3, 1.0):
        with pytest.raises(TypeError, match="lpips must be True, False, None or a module"):
            _metric(vae, lpips=bad)
    with pytest.raises(ValueError, match="compute_rfid=False"):
        _metric(vae, lpips=MeanAbs(), compute_rfid=False)
    assert _metric(vae, lpips=False).lpips_net is None


def test_a_failing_lpips_update_leaves_the_state_unchanged():
    vae = _vae()
    calls = {"n": 0}

    def flaky(recon, images):
        calls["n"] += 1
        if calls["n"] == 2:
            return torch.zeros(recon.shape[0] + 1)  # wrong shape
        if calls["n"] == 3:
            return torch.full((recon.shape[0],), math.nan)
        return (recon - images).abs().flatten(1).mean(1)

    metric = _metric(vae, lpips=flaky)
    metric.update(EVAL[:8])
    before = {k: v.clone() for k, v in metric.metric_state.items() if torch.is_tensor(v)}
    lengths = {k: len(v) for k, v in metric.metric_state.items() if isinstance(v, list)}
    with pytest.raises(ValueError, match=r"one distance per image, shape \(8,\)"):
        metric.update(EVAL[8:16])
    with pytest.raises(ValueError, match="NaN or Inf"):
        metric.update(EVAL[8:16])
    for key, value in before.items():
        assert torch.equal(getattr(metric, key), value), key
    assert lengths == {k: len(v) for k, v in metric.metric_state.items() if isinstance(v, list)}
    metric.update(EVAL[8:16])
    assert int(metric.recon_lpips_scored) == 16


def test_monitor_passes_lpips_through_metric_options():
    vae = _vae()
    monitor = _monitor(vae, metric_options={"lpips": MeanAbs()})
    for step, x in enumerate(_batches(3), 1):
        monitor.observe(latents=vae.encode(x).mean, step=step)
    result = monitor.evaluate(3)
    assert math.isfinite(result["lpips"]) and result["lpips"] > 0
