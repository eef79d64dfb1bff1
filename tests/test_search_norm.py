"""search_norm="bn_channel": the search and pick weights see per-channel standardised latents,
the interpolation the raw ones; checked against a direct implementation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ifid_callback.interpolation_pass as pass_module
import ifid_callback.reference as reference_module
from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.functional.channel_norm import topk_weights
from tests.helpers import RandomFeatures, numpy_slerp, scipy_fid, smooth_images

# Channels on very different scales, so that standardising changes who is nearest.
SCALE = torch.tensor([10.0, 0.1, 1.0])
SHIFT = torch.tensor([5.0, 0.0, -2.0])


def encode(x):
    return F.avg_pool2d(x, 2) * SCALE[None, :, None, None] + SHIFT[None, :, None, None]


def decode(z):
    x = (z - SHIFT[None, :, None, None]) / SCALE[None, :, None, None]
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _metric(bank=None, **kwargs):
    return InterpolatedFID(
        encode, decode, feature=RandomFeatures(3 * 8 * 8, 8), bank=bank, index="exact", **kwargs
    )


def _direct_standardise(reference: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Standardise (N, C, H, W) arrays with the reference's channel mean and sqrt(var + 1e-5)."""
    mean = np.array([reference[:, c].mean() for c in range(reference.shape[1])])
    std = np.array([np.sqrt(reference[:, c].var() + 1e-5) for c in range(reference.shape[1])])
    return [(a - mean[None, :, None, None]) / std[None, :, None, None] for a in arrays]


def _cosine_nn(queries: np.ndarray, reference: np.ndarray, exclude=None) -> np.ndarray:
    q = queries.reshape(len(queries), -1)
    r = reference.reshape(len(reference), -1)
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        r / np.linalg.norm(r, axis=1, keepdims=True)
    ).T
    if exclude is not None:
        sim[np.arange(len(q)), exclude] = -np.inf
    return sim.argmax(1)


def _direct_ifid(images: torch.Tensor, z: np.ndarray, neighbours: np.ndarray) -> float:
    feature = RandomFeatures(3 * 8 * 8, 8)
    interp = np.stack(
        [numpy_slerp(a.ravel(), b.ravel(), 0.5).reshape(a.shape) for a, b in zip(z, neighbours)]
    )
    decoded = decode(torch.from_numpy(interp).float()).clamp(-1, 1)
    real = feature(images).double().numpy()
    return scipy_fid(real, feature(decoded).double().numpy())


def test_bank_search_matches_a_direct_implementation(one_thread):
    reference = smooth_images(80, seed=1)
    queries = smooth_images(40, seed=2)
    bank = LatentBank(capacity=100)
    bank.add(encode(reference))
    metric = _metric(bank, search_norm="bn_channel")
    metric.update(queries)
    got = float(metric.compute()["ifid"])

    z_ref, z_q = encode(reference).double().numpy(), encode(queries).double().numpy()
    s_ref, s_q = _direct_standardise(z_ref, z_ref, z_q)
    nn = _cosine_nn(s_q, s_ref)
    # The variant matters here: raw latents pick other neighbours for many queries.
    assert (nn != _cosine_nn(z_q, z_ref)).sum() >= 5
    want = _direct_ifid(queries, z_q, z_ref[nn])  # raw slerp with the raw neighbour rows
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)

    # The neighbour returned for interpolation is the bank's raw row.
    z_nn, ids = metric.neighbors(encode(queries))
    assert ids.tolist() == nn.tolist()
    torch.testing.assert_close(z_nn, encode(reference)[torch.from_numpy(nn)])
    # The statistics are the bank's, to float64 precision.
    mean = [z_ref[:, c].mean() for c in range(3)]
    np.testing.assert_allclose(metric.reference.statistics.mean.numpy(), mean, rtol=1e-9)


def test_self_reference_matches_a_direct_implementation(one_thread):
    queries = smooth_images(48, seed=3)
    metric = _metric(search_norm="bn_channel")
    metric.update(queries[:20])
    metric.update(queries[20:])
    got = float(metric.compute()["ifid"])
    z = encode(queries).double().numpy()
    (s,) = _direct_standardise(z, z)
    nn = _cosine_nn(s, s, exclude=np.arange(len(z)))
    assert (nn != _cosine_nn(z, z, exclude=np.arange(len(z)))).any()
    assert got == pytest.approx(_direct_ifid(queries, z, z[nn]), rel=1e-6, abs=1e-9)


def test_paper_pick_weights_are_topk_weights_on_standardised_latents(monkeypatch, one_thread):
    reference = smooth_images(80, seed=4)
    bank = LatentBank(capacity=100)
    bank.add(encode(reference))
    metric = _metric(bank, preset="paper", search_norm="bn_channel")
    assert metric.settings["search_norm"] == "bn_channel" and metric.settings["k"] == 10
    seen = {}
    real_pick = pass_module.pick_neighbor

    def spy(distances, candidates, pick, generator):
        seen["weights"] = torch.softmax(-distances.double(), dim=1)
        seen["candidates"] = candidates.clone()
        return real_pick(distances, candidates, pick=pick, generator=generator)

    monkeypatch.setattr(pass_module, "pick_neighbor", spy)
    z = encode(smooth_images(6, seed=5))
    metric.neighbors(z)
    candidates = encode(reference)[seen["candidates"]]  # (Q, k, C, H, W) raw rows found
    want = topk_weights(
        z.reshape(6, -1), candidates.reshape(6, 10, -1), metric.reference.statistics
    )
    torch.testing.assert_close(seen["weights"], want, rtol=1e-5, atol=1e-7)
    # And they are not the raw-latent weights (the variant changes the pick).
    raw = topk_weights(z.reshape(6, -1), candidates.reshape(6, 10, -1))
    assert not torch.allclose(raw, want, atol=1e-3)


def test_gathered_rows_give_the_statistics(monkeypatch, one_thread):
    # Under DDP the statistics are those of the gathered reference, every rank's rows.
    mine, other = encode(smooth_images(30, seed=6)), encode(smooth_images(50, seed=7))
    bank = LatentBank(capacity=100)
    bank.add(mine)
    union = torch.cat([mine, other]).reshape(80, -1)
    monkeypatch.setattr(reference_module, "world_and_rank", lambda: (2, 0))
    monkeypatch.setattr(reference_module, "all_reduce_int", lambda value, op: value)
    steps = torch.full((80,), -1)
    monkeypatch.setattr(
        bank,
        "gather",
        lambda with_steps=False: (
            union.clone(),
            torch.arange(80),
            *([steps] if with_steps else []),
        ),
    )
    metric = _metric(bank, search_norm="bn_channel")
    assert metric.refresh_index() == 80
    z = union.reshape(80, 3, 4, 4).double().numpy()
    mean = [z[:, c].mean() for c in range(3)]
    std = [np.sqrt(z[:, c].var() + 1e-5) for c in range(3)]
    np.testing.assert_allclose(metric.reference.statistics.mean.numpy(), mean, rtol=1e-9)
    np.testing.assert_allclose(metric.reference.statistics.std.numpy(), std, rtol=1e-9)


def test_default_is_the_raw_search_and_bad_values_are_refused():
    assert _metric().settings["search_norm"] is None
    with pytest.raises(ValueError, match="search_norm must be one of"):
        _metric(search_norm="bn")
    metric = _metric(search_norm="bn_channel")
    with pytest.raises(ValueError, match=r"needs latents shaped \(N, C, ...\)"):
        metric.refresh_index(torch.randn(10, 48))
    assert metric.refresh_index(torch.randn(10, 3, 4, 4)) == 10
    from ifid_callback.index import NeighborIndex

    with pytest.raises(ValueError, match="prebuilt index"):
        metric.set_reference(NeighborIndex("exact").build(torch.randn(10, 48)), lambda i: i)


def test_ifid_eval_search_norm_reaches_the_metric(tmp_path, capsys, one_thread):
    from torch.utils.data import DataLoader

    from ifid_callback import cli
    from ifid_callback.data import ImageFolder
    from ifid_callback.demo import load_feature
    from ifid_callback.evaluate import evaluate_vae
    from ifid_callback.loading import load_vae
    from tests.test_cli import SMOKE, save_patches, save_tiny_autoencoder

    vae_dir = save_tiny_autoencoder(tmp_path / "vae")
    images = save_patches(tmp_path / "images", 12)
    reference = save_patches(tmp_path / "reference", 20, split="train")
    common = ["eval", "--vae", str(vae_dir), "--images", str(images), "--reference", str(reference)]
    common += ["--feature", SMOKE, "--index", "exact", "--no-progress", "--device", "cpu"]
    out = tmp_path / "bn.json"
    assert cli.main([*common, "--search-norm", "bn_channel", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["search_norm"] == "bn_channel"

    def loader(folder):
        return DataLoader(ImageFolder(folder, size=16), batch_size=32)

    direct = evaluate_vae(
        load_vae(str(vae_dir), device=torch.device("cpu")),
        loader(images),
        loader(reference),
        feature=load_feature(SMOKE),
        index="exact",
        search_norm="bn_channel",
        device="cpu",
        progress=False,
    )
    assert result["ifid"] == pytest.approx(direct["ifid"], rel=1e-9)
    # A streamed reference keeps no statistics: refused, with the way out.
    assert cli.main([*common, "--search-norm", "bn_channel", "--stream-reference"]) == 2
    assert "not available with stream_reference" in capsys.readouterr().err


def test_monitor_passes_search_norm_to_its_metric(one_thread):
    from ifid_callback.monitor import IFIDMonitor
    from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    evals = smooth_images(24, 3, 16, seed=5)
    monitor = IFIDMonitor(
        vae,
        eval_images=evals,
        feature=RandomFeatures(3 * 16 * 16),
        bank_capacity=32,
        search_norm="bn_channel",
    )
    batches = [smooth_images(8, 3, 16, seed=10 + i) for i in range(4)]
    for x in batches:
        monitor.observe(latents=vae.encode(x).mean, step=None)
    result = monitor.evaluate()
    assert monitor.metric.settings["search_norm"] == "bn_channel"

    bank = LatentBank(32)
    bank.add(torch.cat([vae.encode(x).mean for x in batches]).detach())
    reference = InterpolatedFID(
        vae=vae, feature=RandomFeatures(3 * 16 * 16), bank=bank, search_norm="bn_channel"
    )
    reference.update(evals)
    assert result["ifid"] == pytest.approx(float(reference.compute()["ifid"]), rel=1e-9)
