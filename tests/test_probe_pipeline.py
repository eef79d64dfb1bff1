"""Study pipeline settings: --time-shift and --probe-seeds through the CLI, gFID against the
held-out images, relative latent-noise augmentation in the zoo."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from ifid_callback.probes.cli import _time_shift, main
from ifid_callback.probes.study import StudyConfig
from ifid_callback.probes.zoo import ZooMember, relative_latent_noise, train_zoo

torch.set_num_threads(1)


def test_time_shift_argument_values():
    assert _time_shift("none") is None
    assert _time_shift("NONE") is None
    assert _time_shift("auto") == "auto"
    assert _time_shift("0.5") == 0.5
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="time-shift"):
            _time_shift(bad)


def test_study_defaults_to_uniform_time_for_the_probe():
    config = StudyConfig(vaes=["a.ckpt"], out_dir="x", probe={"steps": 2})
    assert config.probe_config().time_shift is None
    assert config.probe_seeds == 2
    assert config.probe_config(1).seed == config.seed + 1
    kept = StudyConfig(vaes=["a.ckpt"], out_dir="x", probe={"steps": 2, "time_shift": "auto"})
    assert kept.probe_config().time_shift == "auto"
    with pytest.raises(ValueError, match="probe_seeds"):
        StudyConfig(vaes=["a.ckpt"], out_dir="x", probe_seeds=0)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    members = [ZooMember("ae", 4), ZooMember("kl", 4, kl_weight=1e-2, latent_noise=0.1)]
    train_zoo(out, images, members, steps=2, batch_size=16, base_channels=8, progress=False)
    return out


def _cli(zoo, out, *extra):
    return main(
        [
            "run",
            "--zoo",
            str(zoo),
            "--out",
            str(out),
            "--max-train",
            "64",
            "--num-eval",
            "32",
            "--num-reference",
            "48",
            "--num-samples",
            "24",
            "--t-grid",
            "0.5",
            "--feature",
            "tests.test_probe_study:_random_features",
            "--probe-steps",
            "3",
            "--probe-batch-size",
            "16",
            "--probe-ema",
            "0.9",
            "--probe-overrides",
            '{"depth": 1, "hidden_size": 32, "num_heads": 2}',
            "--sampling-steps",
            "2",
            "--batch-size",
            "32",
            "--sample-batch-size",
            "24",
            "--no-progress",
            *extra,
        ]
    )


def test_probe_seeds_and_time_shift_through_the_cli(tiny_zoo, tmp_path, capsys):
    assert _cli(tiny_zoo, tmp_path, "--probe-seeds", "2", "--time-shift", "none") == 0
    out = capsys.readouterr().out
    assert "iFID against rFID" not in out  # two VAEs: too few to compare predictors
    raw = json.loads((tmp_path / "results_raw.json").read_text())
    assert raw["config"]["probe_seeds"] == 2
    assert raw["config"]["probe"]["time_shift"] is None
    for row in raw["vaes"]:
        assert row["time_shift"] is None
        assert len(row["gfid_seeds"]) == 2 and row["probe_seeds"] == [0, 1]
        assert row["gfid_seeds"][0] != row["gfid_seeds"][1]
        assert row["gfid"] == pytest.approx(np.mean(row["gfid_seeds"]))
        assert len(row["gfid_heldout_seeds"]) == 2 and np.isfinite(row["gfid_heldout"])
        assert row["gfid_heldout"] != row["gfid"]
        assert len(row["gfid_t_seeds"]["0.5"]) == 2
        vdir = tmp_path / "vaes" / row["name"]
        assert (vdir / "probe" / "probe.pt").exists() and (vdir / "probe_s1" / "probe.pt").exists()
    md = (tmp_path / "report" / "results.md").read_text()
    assert "gFID per seed" in md and "gFID held-out" in md and "| none |" in md

    # A number: recorded and used; seed-0 latents and reconstruction are reused from the cache.
    out2 = tmp_path / "shifted"
    assert _cli(tiny_zoo, out2, "--probe-seeds", "1", "--time-shift", "0.5") == 0
    raw2 = json.loads((out2 / "results_raw.json").read_text())
    assert raw2["config"]["probe"]["time_shift"] == 0.5
    assert all(r["time_shift"] == 0.5 and len(r["gfid_seeds"]) == 1 for r in raw2["vaes"])
    capsys.readouterr()


def test_bad_cli_values_exit_with_a_message(tiny_zoo, tmp_path, capsys):
    for flag, value in (("--probe-seeds", "0"), ("--time-shift", "fast")):
        with pytest.raises(SystemExit) as exc:
            _cli(tiny_zoo, tmp_path, flag, value)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err


def test_relative_latent_noise_scales_with_the_latent_and_is_detached():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, 4, 4, generator=g)
    for scale in (1.0, 10.0):
        zz = (z * scale).requires_grad_(True)
        noisy = relative_latent_noise(zz, 0.3, torch.Generator().manual_seed(1))
        ratio = (noisy - zz).detach().flatten(1).std(1) / zz.detach().flatten(1).std(1)
        assert ratio.mean().item() == pytest.approx(0.3, rel=0.1)
        noisy.sum().backward()
        # No gradient through the noise's size: d(noisy)/dz is the identity.
        assert torch.equal(zz.grad, torch.ones_like(zz))
    # The same noise draw, relative to the latent: scaling the latent scales the noise.
    a = relative_latent_noise(z, 0.3, torch.Generator().manual_seed(2)) - z
    b = relative_latent_noise(5 * z, 0.3, torch.Generator().manual_seed(2)) - 5 * z
    torch.testing.assert_close(b, 5 * a)
    assert relative_latent_noise(z, 0.0) is z


def test_zoo_records_relative_noise(tiny_zoo):
    ckpt = torch.load(tiny_zoo / "kl.ckpt", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["latent_noise"] == 0.1 and hp["latent_noise_mode"] == "relative"
    assert hp["tiny_vae_config"]["latent_noise"] == 0.0
