"""`ifid eval --lpips`: the standard LPIPS from local files, or an error saying how to enable it."""

from __future__ import annotations

import json

import pytest
import torch

from ifid_callback import cli, perceptual
from tests.test_cli import SMOKE, save_patches, save_tiny_autoencoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_lpips")
    return {"vae": save_tiny_autoencoder(root / "vae"), "images": save_patches(root / "img", 8)}


def _argv(setup, out):
    argv = ["eval", "--vae", str(setup["vae"]), "--images", str(setup["images"])]
    return argv + ["--feature", SMOKE, "--device", "cpu", "--no-progress", "--json", str(out)]


def test_eval_lpips_reports_the_standard_network_in_json_and_summary(
    setup, tmp_path, capsys, monkeypatch
):
    def standard(input_range):  # stands in for lpips.LPIPS(net="alex") from local files
        return lambda recon, images: (recon - images).abs().flatten(1).mean(1)

    monkeypatch.setattr(perceptual, "standard_lpips", standard)
    out = tmp_path / "r.json"
    assert cli.main([*_argv(setup, out), "--lpips"]) == 0
    result = json.loads(out.read_text())
    assert isinstance(result["lpips"], float) and result["lpips"] > 0
    assert f"LPIPS {result['lpips']:.4f}" in capsys.readouterr().out
    assert torch.isfinite(torch.tensor(result["psnr"]))


def test_eval_lpips_without_local_files_is_an_error_saying_how(
    setup, tmp_path, capsys, monkeypatch
):
    missing = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    monkeypatch.setattr(
        perceptual,
        "standard_lpips_files",
        lambda: {"package": None, "linear": None, "backbone": missing},
    )
    assert cli.main([*_argv(setup, tmp_path / "r.json"), "--lpips"]) == 2
    err = capsys.readouterr().err
    assert "ifid eval: error:" in err and "pip install lpips" in err and str(missing) in err


def test_eval_help_lists_lpips(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--lpips" in text and "never downloaded" in text
