"""The offline gFID study end to end: a smoke run, resumption after an interruption, outputs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from ifid_callback.probes.cli import main
from ifid_callback.probes.gfid_error import gfid_influence
from ifid_callback.probes.study import StudyConfig, load_study, run_study
from ifid_callback.probes.zoo import ZooMember, load_vae_checkpoint, train_zoo
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures

torch.set_num_threads(1)


class _Crash(RuntimeError):
    pass


class CrashingFeatures(RandomFeatures):
    """RandomFeatures that fails on its ``fail_at``-th call (a simulated interruption)."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__(in_dim=3 * 32 * 32, num_features=16)
        self.fail_at = fail_at

    def forward(self, x):
        if self.fail_at is not None and self.calls + 1 >= self.fail_at:
            raise _Crash("simulated interruption")
        return super().forward(x)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    members = [ZooMember("ae", 4), ZooMember("kl", 2, kl_weight=1e-2, latent_noise=0.1)]
    paths = train_zoo(out, images, members, steps=3, batch_size=16, base_channels=8, progress=False)
    return paths


def _config(zoo, out):
    return StudyConfig(
        vaes=[str(p) for p in zoo],
        out_dir=str(out),
        image_size=32,
        max_train=96,
        num_eval=48,
        num_reference=64,
        num_samples=32,
        t_grid=[0.5],
        feature="tests.helpers:RandomFeatures",
        probe={
            "size": "tiny",
            "steps": 6,
            "batch_size": 16,
            "ema_decay": 0.9,
            "model_overrides": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "checkpoint_every": 3,
        },
        sampling_steps=3,
        batch_size=32,
        sample_batch_size=16,
        probe_seeds=1,
    )


def _events(out):
    path = out / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_smoke_study_resumes_and_writes_every_output(zoo, tmp_path):
    started = time.time()
    config = _config(zoo, tmp_path)
    # First run dies in the feature pass of the second VAE's gFID(t) stage or so.
    with pytest.raises(_Crash):
        run_study(config, feature=CrashingFeatures(fail_at=12), progress=False, log=None)
    done = _events(tmp_path)
    assert done, "the first run finished no stage before the interruption"
    first_stages = {(e["file"], e["stage"]) for e in done}
    marks = {}
    for name in ("ae", "kl", "real"):
        path = tmp_path / ("real" if name == "real" else f"vaes/{name}") / "stages.json"
        if path.exists():
            marks[name] = {k: v["finished_at"] for k, v in json.loads(path.read_text()).items()}

    features = CrashingFeatures(fail_at=None)
    result = run_study(config, feature=features, progress=False, log=None)
    second = _events(tmp_path)[len(done) :]
    second_stages = {(e["file"], e["stage"]) for e in second}
    # Nothing that had finished is redone, and everything else is done exactly once.
    assert not first_stages & second_stages
    all_stages = {
        "latents",
        "reconstruction",
        "probe",
        "gfid",
        "gfid_se",
        "gfid_t=0.5",
        "gfid_t_se=0.5",
        "irs",
        "split_half",
    }
    for name in ("ae", "kl"):
        got = {s for f, s in first_stages | second_stages if f == name}
        assert got == all_stages
    for name, stamps in marks.items():
        path = tmp_path / ("real" if name == "real" else f"vaes/{name}") / "stages.json"
        now = json.loads(path.read_text())
        for stage, stamp in stamps.items():
            assert now[stage]["finished_at"] == stamp

    # A third run recomputes nothing and calls the feature network zero times.
    features3 = CrashingFeatures(fail_at=None)
    again = run_study(config, feature=features3, progress=False, log=None)
    assert features3.calls == 0
    assert len(_events(tmp_path)) == len(done) + len(second)
    assert again["vaes"] == result["vaes"]

    for row in result["vaes"]:
        for key in ("rfid", "ifid", "psnr", "gfid"):
            assert np.isfinite(row[key])
        assert set(row["gfid_t"]) == {"0.5"}
        # gFID(t)'s standard error: the influence SE over the regenerated samples (one seed).
        regen = np.load(tmp_path / "vaes" / row["name"] / "features_regen_t0.5.npy")
        held_out = np.load(tmp_path / "real" / "eval_features.npy")
        reference = gfid_influence(regen, held_out)
        assert row["gfid_t"]["0.5"] == pytest.approx(float(reference.value), rel=1e-9)
        assert row["gfid_t_se"]["0.5"] == pytest.approx(reference.std_error, rel=1e-12)
        assert 0 < row["irs"]["irs"] <= 1
    report = tmp_path / "report"
    for name in (
        "results.json",
        "results.csv",
        "results.md",
        "scatter_rfid_vs_gfid.png",
        "scatter_ifid_vs_gfid.png",
        "scatter_neg_psnr_vs_gfid.png",
        "pcc_vs_t.png",
    ):
        assert (report / name).stat().st_size > 0, name
    for name in ("ae", "kl"):
        vdir = tmp_path / "vaes" / name
        for f in (
            "latents_train.npy",
            "latents_eval.npy",
            "features_samples.npy",
            "samples.png",
            "probe/probe.pt",
        ):
            assert (vdir / f).exists(), f
        assert np.load(vdir / "latents_train.npy", mmap_mode="r").shape[0] == 96
    assert load_study(tmp_path) == config
    assert time.time() - started < 180


def test_changed_settings_redo_only_dependent_stages(zoo, tmp_path):
    config = _config(zoo, tmp_path)
    config.vaes, config.names = config.vaes[:1], None
    run_study(config, feature=CrashingFeatures(None), progress=False, log=None, report=False)
    n = len(_events(tmp_path))
    config.t_grid = [0.5, 0.3]
    run_study(config, feature=CrashingFeatures(None), progress=False, log=None, report=False)
    assert [e["stage"] for e in _events(tmp_path)[n:]] == ["gfid_t=0.3", "gfid_t_se=0.3"]


def test_study_ifid_matches_the_metric(zoo, tmp_path):
    # The study's rFID/iFID (cached latents, functional pieces) equal InterpolatedFID's with a
    # bank holding the same training latents.
    from ifid_callback import InterpolatedFID, LatentBank

    config = _config(zoo, tmp_path)
    config.vaes = config.vaes[:1]
    config.t_grid = []
    result = run_study(
        config, feature=CrashingFeatures(None), progress=False, log=None, report=False
    )
    row = result["vaes"][0]
    vae = load_vae_checkpoint(config.vaes[0])
    z_train = torch.from_numpy(np.load(tmp_path / "vaes/ae/latents_train.npy"))
    bank = LatentBank(capacity=len(z_train))
    bank.add(z_train)
    metric = InterpolatedFID(vae=vae, feature=CrashingFeatures(None), bank=bank, index="exact")
    from ifid_callback.probes.study_data import study_dataset

    ds = study_dataset("embedded", "val", 32, 48, 0)
    images = torch.stack([ds[i] for i in range(len(ds))])
    metric.update(images)
    out = metric.compute()
    assert row["ifid"] == pytest.approx(float(out["ifid"]), rel=1e-4)
    assert row["rfid"] == pytest.approx(float(out["rfid"]), rel=1e-4)


def test_load_demo_style_checkpoint(tmp_path):
    # The demo's LightningModule stores the VAE as `vae` and saves latent/base channels only.
    vae = TinyVAE(TinyVAEConfig(latent_channels=3, base_channels=8))
    ckpt = {
        "state_dict": {f"vae.{k}": v for k, v in vae.state_dict().items()},
        "hyper_parameters": {
            "base_channels": 8,
            "latent_channels": 3,
            "lr": 1e-3,
            "kl_weight": 1e-4,
        },
    }
    torch.save(ckpt, tmp_path / "demo.ckpt")
    loaded = load_vae_checkpoint(tmp_path / "demo.ckpt")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(x).mean, vae.eval().encode(x).mean)
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="exactly one TinyVAE"):
        load_vae_checkpoint(tmp_path / "bad.ckpt")


def test_cli_report_and_errors(zoo, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path)]) == 2
    assert "at least one --vae" in capsys.readouterr().err
    assert main(["report", "--study", str(tmp_path)]) == 2
    config = _config(zoo, tmp_path)
    config.t_grid = []
    run_study(config, feature=CrashingFeatures(None), progress=False, log=None, report=False)
    assert main(["report", "--study", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "Correlation with gFID" in capsys.readouterr().out
    assert (tmp_path / "rep" / "results.csv").exists()


def test_feature_specs():
    from ifid_callback.probes.gfid import resolve_study_feature

    with pytest.raises(ValueError, match=">= 75"):
        resolve_study_feature("inception@64")
    with pytest.raises(ValueError, match="integer size"):
        resolve_study_feature("inception@big")
    with pytest.raises(ValueError, match="package.module:factory"):
        resolve_study_feature("vgg")
    module = resolve_study_feature("tests.test_probe_study:_random_features")
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 16)


def _random_features():
    return RandomFeatures(in_dim=3 * 32 * 32, num_features=16)


@pytest.mark.parametrize("na,nb,d", [(30, 50, 64), (100, 40, 64), (80, 90, 32)])
def test_fid_from_features_matches_frechet_distance(na, nb, d):
    # Fewer samples than dimensions takes the n x n route; more takes the d x d one.
    from ifid_callback.functional.frechet import frechet_distance, statistics_of
    from ifid_callback.probes.gfid import fid_from_features
    from tests.helpers import scipy_fid

    g = torch.Generator().manual_seed(na)
    a = torch.randn(na, d, generator=g) * torch.rand(d, generator=g) + 0.3
    b = torch.randn(nb, d, generator=g)
    ref = float(frechet_distance(*statistics_of(a.double()), *statistics_of(b.double())))
    assert fid_from_features(a.numpy(), b.numpy()) == pytest.approx(ref, rel=1e-7)
    assert fid_from_features(a.numpy(), b.numpy()) == pytest.approx(
        scipy_fid(a.double().numpy(), b.double().numpy()), rel=1e-5
    )
