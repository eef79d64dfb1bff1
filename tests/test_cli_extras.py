"""`ifid eval` reports the metric's extras in its JSON and on its summary line."""

from __future__ import annotations

import json

import pytest

from ifid_callback import cli
from tests.test_cli import SMOKE, save_patches, save_tiny_autoencoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_extras")
    return {"vae": save_tiny_autoencoder(root / "vae"), "images": save_patches(root / "img", 12)}


def _eval(setup, tmp_path, *extra: str) -> dict:
    out = tmp_path / f"r{len(extra)}.json"
    argv = ["eval", "--vae", str(setup["vae"]), "--images", str(setup["images"])]
    argv += ["--feature", SMOKE, "--device", "cpu", "--no-progress", "--json", str(out), *extra]
    assert cli.main(argv) == 0
    return json.loads(out.read_text())


def test_eval_json_has_the_default_extras_and_the_opt_in_ones(setup, tmp_path, capsys):
    default = _eval(setup, tmp_path)
    printed = capsys.readouterr().out
    for key in ("ifid", "rfid", "ifid_std", "rfid_std", "psnr", "ssim", "mse"):
        assert isinstance(default[key], float), key
    assert default["ifid_std"] > 0 and default["mse"] > 0 and -1 <= default["ssim"] <= 1
    assert f"iFID {default['ifid']:.3f} +- {default['ifid_std']:.3f}" in printed
    assert f"PSNR {default['psnr']:.2f} dB" in printed

    everything = _eval(setup, tmp_path, "--kid", "--precision-recall")
    for key in ("ikid", "ikid_std", "rkid", "rkid_std", "iprecision", "irecall"):
        assert isinstance(everything[key], float), key
    assert 0 <= everything["iprecision"] <= 1 and 0 <= everything["irecall"] <= 1
    assert everything["ifid"] == default["ifid"] and everything["psnr"] == default["psnr"]

    plain = _eval(setup, tmp_path, "--no-uncertainty", "--no-reconstruction-metrics", "--k", "1")
    assert not {"ifid_std", "rfid_std", "psnr", "ssim", "mse", "ikid"} & set(plain)
    assert plain["ifid"] == pytest.approx(default["ifid"], rel=1e-12)


def test_eval_help_lists_the_extras(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--no-uncertainty",
        "--no-reconstruction-metrics",
        "--kid",
        "--precision-recall",
    ):
        assert option in text
