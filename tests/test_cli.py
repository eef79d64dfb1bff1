"""The `ifid` command line: help texts, `ifid eval` end to end on a saved AutoencoderKL, `ifid demo`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ifid_callback import cli
from ifid_callback.data import EmbeddedPatches, ImageFolder, save_image_folder
from ifid_callback.demo import SmokeFeatures, format_table, load_feature
from ifid_callback.tiny_vae import small_autoencoder_kl
from tests.helpers import scipy_fid

SMOKE = "ifid_callback.demo:smoke_features"


def save_tiny_autoencoder(path: Path, seed: int = 0) -> Path:
    """A randomly initialised ~44k-parameter diffusers AutoencoderKL, written with save_pretrained."""
    pytest.importorskip("diffusers")
    vae = small_autoencoder_kl(seed, (8, 16), norm_num_groups=8, sample_size=16)
    vae.save_pretrained(path)
    return path


def save_patches(root: Path, count: int, split: str = "val", size: int = 16) -> Path:
    """``count`` real 16x16 photo patches written as PNGs."""
    images = EmbeddedPatches(split, size=size, max_items=count).as_tensor()
    save_image_folder(images, root)
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "vae": save_tiny_autoencoder(root / "vae"),
        "images": save_patches(root / "images", 12),
        "reference": save_patches(root / "reference", 20, split="train"),
        "root": root,
    }


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_texts_list_every_option(capsys):
    top = _help(["--help"], capsys)
    assert "eval" in top and "demo" in top
    ev = _help(["eval", "--help"], capsys)
    for option in (
        "--vae",
        "--images",
        "--reference",
        "--num-images",
        "--interpolation",
        "--alpha",
        "--k",
        "--index",
        "--json",
        "--no-progress",
        "--preset",
        "--feature",
    ):
        assert option in ev, option
    demo = _help(["demo", "--help"], capsys)
    for option in (
        "--max-steps",
        "--data",
        "--gpus",
        "--size",
        "--eval-images",
        "--out",
        "--seed",
        "--evals",
        "--feature",
        "--threads",
    ):
        assert option in demo, option
    assert _help(["demo", "--", "--help"], capsys) == demo


def _independent_ifid(vae_dir: Path, images_dir: Path, alpha: float) -> tuple[float, float]:
    """iFID/rFID written out by hand: self-excluded cosine NN, numpy slerp, scipy FID."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    folder = ImageFolder(images_dir)
    x = torch.stack([folder[i] for i in range(len(folder))])
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    flat = z.flatten(1).double().numpy()
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nn_idx = sim.argmax(1)
    mixed = []
    for i, j in enumerate(nn_idx):
        a, b = flat[i], flat[j]
        theta = np.arccos(np.clip(unit[i] @ unit[j], -1, 1))
        w = (np.sin((1 - alpha) * theta), np.sin(alpha * theta)) / np.sin(theta)
        mixed.append(w[0] * a + w[1] * b)
    z_hat = torch.tensor(np.stack(mixed), dtype=torch.float32).reshape(z.shape)
    with torch.no_grad():
        interp = vae.decode(z_hat).sample.clamp(-1, 1)
        recon = vae.decode(z).sample.clamp(-1, 1)
        feat = SmokeFeatures()
        real, fi, fr = (feat(t).double().numpy() for t in (x, interp, recon))
    return scipy_fid(real, fi), scipy_fid(real, fr)


def eval_args(setup) -> list[str]:
    """The start of an `ifid eval` command on the test's VAE and query folder."""
    return ["eval", "--vae", str(setup["vae"]), "--images", str(setup["images"])]


def test_eval_end_to_end_matches_a_hand_written_pipeline(setup, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = cli.main(
        [
            *eval_args(setup),
            "--feature",
            SMOKE,
            "--index",
            "exact",
            "--json",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "iFID" in printed and "rFID" in printed and str(out) in printed
    result = json.loads(out.read_text())
    assert result["num_images"] == 12 and result["bank_size"] == 12
    ifid, rfid = _independent_ifid(setup["vae"], setup["images"], alpha=0.5)
    assert result["ifid"] == pytest.approx(ifid, rel=1e-3, abs=1e-5)
    assert result["rfid"] == pytest.approx(rfid, rel=1e-3, abs=1e-5)


def test_eval_alpha_zero_gives_rfid_and_reference_folder_sets_the_bank(setup, tmp_path):
    out = tmp_path / "a0.json"
    cli.main(
        [
            *eval_args(setup),
            "--feature",
            SMOKE,
            "--reference",
            str(setup["reference"]),
            "--alpha",
            "0",
            "--num-images",
            "8",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    result = json.loads(out.read_text())
    assert result["num_images"] == 8 and result["bank_size"] == 20
    # alpha = 0 decodes the latent itself: the interpolants are the reconstructions.
    assert result["ifid"] == pytest.approx(result["rfid"], rel=1e-9, abs=1e-9)


def test_eval_streamed_reference_matches_the_in_memory_bank(setup, tmp_path):
    def run(*extra):
        out = tmp_path / f"r{len(extra)}.json"
        common = [
            *eval_args(setup),
            "--feature",
            SMOKE,
            "--reference",
            str(setup["reference"]),
            "--index",
            "exact",
        ]
        cli.main([*common, "--num-images", "8", "--json", str(out), "--no-progress", *extra])
        return json.loads(out.read_text())

    in_memory, streamed = run(), run("--stream-reference")
    assert streamed["bank_size"] == in_memory["bank_size"] == 20
    assert streamed["ifid"] == pytest.approx(in_memory["ifid"], rel=1e-6)
    assert streamed["rfid"] == pytest.approx(in_memory["rfid"], rel=1e-9)


def test_eval_reports_bad_input_without_a_traceback(setup, tmp_path, capsys):
    code = cli.main(
        [
            "eval",
            "--vae",
            str(setup["vae"]),
            "--images",
            str(tmp_path / "missing"),
            "--feature",
            SMOKE,
            "--no-progress",
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    code = cli.main(
        [
            "eval",
            "--vae",
            str(tmp_path),
            "--images",
            str(setup["images"]),
            "--feature",
            SMOKE,
        ]
    )
    assert code == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="package.module:factory"):
        load_feature("not-a-factory")
    with pytest.raises(TypeError, match="nn.Module"):
        load_feature("math:pi")


def test_eval_with_the_real_inception_on_four_images(setup, tmp_path, one_thread):
    pytest.importorskip("ifid_callback.features")
    out = tmp_path / "inception.json"
    code = cli.main(
        [
            *eval_args(setup),
            "--num-images",
            "4",
            "--json",
            str(out),
            "--no-progress",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 4
    # Random decoder vs photos: far apart in Inception space, and finite.
    assert math.isfinite(result["ifid"]) and result["ifid"] > 10
    assert math.isfinite(result["rfid"]) and result["rfid"] > 10


def test_demo_runs_tiny_and_selects_the_best_checkpoint(tmp_path, capsys):
    pytest.importorskip("lightning")
    out = tmp_path / "demo"
    code = cli.main(
        [
            "demo",
            "--max-steps",
            "6",
            "--evals",
            "3",
            "--eval-images",
            "8",
            "--batch-size",
            "8",
            "--base-channels",
            "8",
            "--feature",
            SMOKE,
            "--out",
            str(out),
            "--no-progress",
            "--part",
            "monitor",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    lines = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    rows = [line for line in lines if len(line) >= 6]
    assert [int(r[0]) for r in rows] == [2, 4, 6]
    ifids = [float(r[4]) for r in rows]
    best_row = [r for r in rows if "best" in " ".join(r)]
    assert len(best_row) == 1 and float(best_row[0][4]) == min(ifids)
    checkpoints = list(out.glob("version_0/checkpoints/*.ckpt"))
    assert len(checkpoints) == 1 and str(checkpoints[0]) in printed
    assert (out / "version_0" / "ifid_grid.png").is_file()
    assert list((out / "version_0").glob("events.out.tfevents.*"))


def test_demo_trains_on_a_user_folder(tmp_path, capsys):
    pytest.importorskip("lightning")
    folder = save_patches(tmp_path / "photos", 40, split="train", size=20)
    code = cli.main(
        [
            "demo",
            "--data",
            str(folder),
            "--size",
            "16",
            "--max-steps",
            "2",
            "--evals",
            "1",
            "--eval-images",
            "4",
            "--batch-size",
            "8",
            "--base-channels",
            "8",
            "--feature",
            SMOKE,
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--part",
            "monitor",
        ]
    )
    assert code == 0
    assert "40 images from" in capsys.readouterr().out


def test_demo_rejects_bad_options(tmp_path, capsys):
    from ifid_callback.demo import main as demo_main

    with pytest.raises(ValueError, match="multiple of 4"):
        demo_main(["--size", "30"])
    with pytest.raises(ValueError, match="--evals"):
        demo_main(["--max-steps", "2", "--evals", "5"])
    assert cli.main(["demo", "--data", str(tmp_path / "missing"), "--feature", SMOKE]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_format_table_marks_the_best_row():
    rows = [
        {"step": 10, "loss": 0.5, "val_loss": 0.4, "rfid": 200.0, "ifid": 210.0, "eval_seconds": 3},
        {"step": 20, "loss": 0.3, "val_loss": 0.2, "rfid": 150.0, "ifid": 160.5, "eval_seconds": 3},
    ]
    table = format_table(rows, best_step=20).splitlines()
    assert table[0].split() == [
        *("step", "train", "loss", "val", "loss", "rFID", "iFID", "+-", "SE", "PSNR", "dB"),
        *("eval", "s"),
    ]
    assert table[3].endswith("<- best val/ifid") and "160.50" in table[3]
    assert "best" not in table[2]
