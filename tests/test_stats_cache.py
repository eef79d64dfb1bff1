"""Real-image statistics cached on disk: hits skip the real pass, any change of the images, the
network or a setting misses, writes are atomic, ADM .npz files round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from ifid_callback import evaluate_vae
from ifid_callback.data import ImageFolder, save_image_folder
from ifid_callback.stats_cache import (
    StatsCache,
    default_cache_dir,
    load_adm_npz,
    loader_digest,
    network_identity,
    save_adm_npz,
    statistics_from_sums,
)
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8


def counted(feature: torch.nn.Module) -> torch.nn.Module:
    """``feature`` with ``feature.seen`` counting the images it featurised (a forward hook, so
    the count is no setting of the network and not part of its cache key)."""
    feature.seen = {0: 0}  # a dict: no plain setting (a plain int would change the key)

    def hook(module, args, out):
        module.seen[0] += args[0].shape[0]

    feature.register_forward_hook(hook)
    return feature


def run(images, cache, feature=None, batch_size=8, **kwargs):
    feature = feature if feature is not None else counted(RandomFeatures(IN_DIM))
    out = evaluate_vae(
        encoder=encode,
        decoder=decode,
        query_loader=DataLoader(TensorDataset(images), batch_size=batch_size),
        feature=feature,
        progress=False,
        real_stats_cache=cache,
        **kwargs,
    )
    return out, feature


def entries(directory):
    return sorted(p.name for p in directory.glob("*.npz")) if directory.exists() else []


def test_second_evaluation_reads_the_cache_and_skips_the_real_pass(tmp_path):
    images = smooth_images(24, seed=1)
    plain, f0 = run(images, None)
    first, f1 = run(images, tmp_path)
    second, f2 = run(images, tmp_path)
    assert len(entries(tmp_path)) == 1
    assert (first["real_stats_cached"], second["real_stats_cached"]) == (False, True)
    # Real images, interpolants and reconstructions the first time; no real images the second.
    assert (f0.seen[0], f1.seen[0], f2.seen[0]) == (72, 72, 48)
    for key in ("ifid", "rfid", "ifid_std", "rfid_std"):
        assert first[key] == plain[key] and second[key] == plain[key], key
    assert "real_stats_cached" not in plain


def test_a_changed_image_or_setting_never_reads_a_stale_entry(tmp_path):
    images = smooth_images(24, seed=1)
    run(images, tmp_path)
    changed = images.clone()
    changed[5, 0, 3, 3] += 0.01  # one pixel of one image
    out, feature = run(changed, tmp_path)
    plain, _ = run(changed, None)
    assert out["real_stats_cached"] is False and feature.seen[0] == 72
    assert out["ifid"] == plain["ifid"] and out["rfid"] == plain["rfid"]
    misses = [
        dict(feature=counted(RandomFeatures(IN_DIM, seed=1))),  # other weights
        dict(input_range=(-1.0, 1.5)),  # another input range
        dict(max_images=20),  # fewer images
    ]
    for kwargs in misses:
        out, _ = run(images, tmp_path, **kwargs)
        assert out["real_stats_cached"] is False, kwargs
    # Settings that do not reach the real images share the entry; an entry with rows also
    # serves a metric that needs only the sums.
    for kwargs in (dict(alpha=0.3, interpolation="linear"), dict(uncertainty=False)):
        out, _ = run(images, tmp_path, **kwargs)
        assert out["real_stats_cached"] is True, kwargs


def test_sums_only_entry_is_recomputed_for_a_metric_that_needs_rows(tmp_path):
    images = smooth_images(16, seed=2)
    run(images, tmp_path, uncertainty=False, reconstruction_metrics=False)
    out, feature = run(images, tmp_path)
    assert out["real_stats_cached"] is False and feature.seen[0] == 48
    again, _ = run(images, tmp_path)
    assert again["real_stats_cached"] is True
    assert again["ifid_std"] == out["ifid_std"]


def test_network_identity_follows_weights_class_and_settings():
    a, b = RandomFeatures(IN_DIM), RandomFeatures(IN_DIM)
    assert network_identity(a) == network_identity(b)
    b.weight[0, 0] += 1e-6
    assert network_identity(a) != network_identity(b)
    c = RandomFeatures(IN_DIM)
    c.num_features = 17  # a plain setting
    assert network_identity(a) != network_identity(c)


def test_image_folder_is_keyed_by_file_bytes_and_loading(tmp_path):
    root = tmp_path / "images"
    save_image_folder(smooth_images(6, size=16, seed=3), root)
    folder = ImageFolder(root)

    def digest(dataset, **kwargs):
        return loader_digest(DataLoader(dataset, batch_size=4), lambda b: b, **kwargs)

    base = digest(folder)
    assert base[1] == 6 and digest(folder) == base
    assert digest(ImageFolder(root, size=8))[0] != base[0]
    assert digest(folder, limit=4)[0] == digest(Subset(folder, range(4)))[0] != base[0]
    path, original = folder.paths[2], folder.paths[2].read_bytes()
    path.write_bytes(folder.paths[3].read_bytes())  # same name, another image
    assert digest(ImageFolder(root))[0] != base[0]
    path.write_bytes(original)
    assert digest(ImageFolder(root)) == base


def test_a_shuffling_loader_is_refused(tmp_path):
    loader = DataLoader(TensorDataset(smooth_images(8)), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        evaluate_vae(
            encoder=encode,
            decoder=decode,
            query_loader=loader,
            feature=RandomFeatures(IN_DIM),
            progress=False,
            real_stats_cache=tmp_path,
        )


def test_writes_are_atomic_and_a_damaged_entry_is_recomputed(tmp_path):
    cache = StatsCache(tmp_path / "c")
    key = "ab" * 32
    stats = {
        "real_features_sum": torch.ones(3, dtype=torch.float64),
        "real_features_cov_sum": torch.eye(3, dtype=torch.float64),
        "real_num_samples": torch.tensor(4),
    }
    calls = []
    got = cache.load_or_compute(key, lambda: calls.append(1) or stats, meta={"why": "test"})
    assert calls == [1] and torch.equal(got["real_features_sum"], stats["real_features_sum"])
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.npz"]  # no temp file left
    again = cache.load_or_compute(key, lambda: calls.append(2) or stats)
    assert calls == [1] and torch.equal(again["real_features_cov_sum"], torch.eye(3).double())
    cache.path(key).write_bytes(b"not an npz")
    assert cache.load(key) is None
    cache.load_or_compute(key, lambda: calls.append(3) or stats)
    assert calls == [1, 3] and cache.load(key) is not None
    with pytest.raises(ValueError, match="hex digest"):
        cache.path("../escape")


def test_adm_npz_round_trip_and_errors(tmp_path):
    rows = torch.randn(50, 4, dtype=torch.float64)
    stats = {
        "real_features_sum": rows.sum(0),
        "real_features_cov_sum": rows.T @ rows,
        "real_num_samples": torch.tensor(50),
    }
    mu, sigma = statistics_from_sums(stats)
    assert torch.allclose(mu, rows.mean(0)) and torch.allclose(sigma, torch.cov(rows.T))
    path = save_adm_npz(tmp_path / "ref.npz", mu, sigma)
    with np.load(path) as data:
        assert sorted(data.files) == ["mu", "sigma"]
    mu2, sigma2 = load_adm_npz(path)
    assert torch.equal(mu2, mu) and torch.equal(sigma2, sigma)
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' \\(d,\\) and 'sigma'"):
        load_adm_npz(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="sigma \\(d, d\\)"):
        save_adm_npz(tmp_path / "x.npz", np.zeros(3), np.zeros((2, 2)))


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IFID_STATS_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("IFID_STATS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ifid_callback" / "stats"


def test_ifid_eval_caches_by_default_in_the_cache_directory(tmp_path, monkeypatch):
    from ifid_callback import cli
    from tests.test_cli import SMOKE, save_patches, save_tiny_autoencoder

    vae, images = save_tiny_autoencoder(tmp_path / "vae"), save_patches(tmp_path / "img", 8)
    default = tmp_path / "default-cache"
    monkeypatch.setenv("IFID_STATS_CACHE", str(default))

    def ifid_eval(*extra):
        out = tmp_path / "out.json"
        argv = ["eval", "--vae", str(vae), "--images", str(images), "--feature", SMOKE]
        assert cli.main([*argv, "--no-progress", "--json", str(out), *extra]) == 0
        return json.loads(out.read_text())

    off = ifid_eval("--no-stats-cache")
    assert "real_stats_cached" not in off and not default.exists()
    first, second = ifid_eval(), ifid_eval()
    assert (first["real_stats_cached"], second["real_stats_cached"]) == (False, True)
    assert second["ifid"] == off["ifid"] and second["rfid"] == off["rfid"]
    assert len(entries(default)) == 1
    explicit = tmp_path / "explicit"
    assert ifid_eval("--stats-cache", str(explicit))["real_stats_cached"] is False
    assert len(entries(explicit)) == 1


def test_a_new_monitor_on_the_same_images_reads_the_cache_at_its_first_evaluation(tmp_path):
    from ifid_callback.monitor import IFIDMonitor
    from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

    size = 16
    eval_images = smooth_images(16, 3, size, seed=5)
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    train = smooth_images(16, 3, size, seed=6)

    def first_evaluation(cache, images=eval_images):
        feature = counted(RandomFeatures(3 * size * size))
        monitor = IFIDMonitor(
            vae, eval_images=images, feature=feature, bank_capacity=16, real_stats_cache=cache
        )
        monitor.observe(latents=vae.encode(train).mean, step=1)
        return monitor.evaluate(), feature.seen[0]

    plain, seen_plain = first_evaluation(None)
    first, seen_first = first_evaluation(tmp_path)
    second, seen_second = first_evaluation(tmp_path)
    assert (seen_plain, seen_first, seen_second) == (48, 48, 32)  # no real pass the second time
    assert len(entries(tmp_path)) == 1
    for key in ("ifid", "rfid", "ifid_std", "rfid_std"):
        assert first[key] == plain[key] and second[key] == pytest.approx(plain[key], rel=1e-12)
    changed = eval_images.clone()
    changed[0, 0, 0, 0] = -changed[0, 0, 0, 0]
    _, seen_changed = first_evaluation(tmp_path, changed)
    assert seen_changed == 48 and len(entries(tmp_path)) == 2


def test_study_real_stage_reads_features_from_the_cache_and_writes_the_adm_reference(tmp_path):
    from ifid_callback.demo import SmokeFeatures
    from ifid_callback.probes.real_stage import real_stage
    from ifid_callback.probes.study_config import StudyConfig

    def stage(name, cache):
        config = StudyConfig(
            vaes=["unused.ckpt"],
            out_dir=str(tmp_path / name),
            image_size=16,
            num_eval=8,
            num_reference=16,
            num_samples=4,
            batch_size=8,
        )
        feature = counted(SmokeFeatures(num_features=8))
        out = tmp_path / name
        result = real_stage(config, feature, out, out / "events.jsonl", False, cache)
        return result, feature.seen[0], out / "real"

    cache = tmp_path / "cache"
    first, seen_first, real_a = stage("a", cache)
    second, seen_second, real_b = stage("b", cache)
    assert (seen_first, seen_second) == (24, 0) and len(entries(cache)) == 2
    assert second["gfid_floor"] == first["gfid_floor"]
    ref = np.load(real_b / "reference_features.npy")
    assert np.array_equal(ref, np.load(real_a / "reference_features.npy"))
    mu, sigma = load_adm_npz(real_b / "reference_stats.npz")
    assert torch.allclose(mu, torch.from_numpy(ref).double().mean(0))
    assert torch.allclose(sigma, torch.cov(torch.from_numpy(ref).double().T))
