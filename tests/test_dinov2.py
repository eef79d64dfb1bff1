"""DINOv2 features (FD_DINOv2): a tiny Dinov2Model with seeded random weights saved to a local
directory; features against an independent computation, the missing-weights errors, and
``feature=("inception", "dinov2")`` running each network once per image."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.dinov2 import DINOV2_WEIGHTS_ENV, DINOv2Features
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images

SIZE = 16
IN_DIM = 3 * SIZE * SIZE


def save_tiny_dinov2(path) -> str:
    """A 2-layer, 32-d DINOv2 (patch 14) with seeded random weights, written by save_pretrained."""
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
    )
    Dinov2Model(config).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return save_tiny_dinov2(tmp_path_factory.mktemp("dinov2") / "dinov2-tiny")


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DINOV2_WEIGHTS_ENV, raising=False)


def reference_features(weights: str, images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """EDM2's fd_dinov2 path written out with torch primitives, on the model loaded directly."""
    model = Dinov2Model.from_pretrained(weights, local_files_only=True).eval()
    x = images.clamp(low, high)
    x = torch.round((x - low) / (high - low) * 255)  # uint8 levels (no .5 ties in these images)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True) / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = model(pixel_values=(x - mean) / std).last_hidden_state  # after the final norm
    return hidden[:, 0]  # the CLS token


@pytest.mark.parametrize("channels,input_range", [(3, (-1.0, 1.0)), (1, (0.0, 1.0))])
def test_features_equal_independent_computation(weights, channels, input_range):
    low, high = input_range
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, channels, 20, 24, generator=g) * 1.2 * (high - low) + low - 0.1
    net = DINOv2Features(weights=weights, input_range=input_range)
    got = net(images)
    assert got.shape == (3, 32) and net.num_features == 32
    torch.testing.assert_close(got, reference_features(weights, images, low, high))


def test_env_variable_and_names(weights, monkeypatch):
    monkeypatch.setenv(DINOV2_WEIGHTS_ENV, weights)
    metric = InterpolatedFID(encode, decode, feature="dinov2", bank=None)
    assert isinstance(metric.feature_net, DINOv2Features)
    assert metric.num_features == 32 and metric.feature_net.weights_source == weights
    assert metric.settings["feature"] == "dinov2"  # the tiny model is no standard size
    with pytest.raises(ValueError, match="768-d.*32-d"):
        DINOv2Features("vitb14", weights=weights)
    with pytest.raises(ValueError, match="dinov2-vitl14"):
        InterpolatedFID(encode, decode, feature="dinov2-vitx14")
    with pytest.raises(ValueError, match="applies to Inception"):
        InterpolatedFID(encode, decode, feature="dinov2", preprocessing="standard")


def test_missing_weights_name_what_to_put_where(tmp_path, monkeypatch, no_env):
    empty = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError) as found:
        DINOv2Features(weights=empty)
    message = str(found.value)
    assert str(empty) in message and "config.json" in message
    assert "save_pretrained" in message and DINOV2_WEIGHTS_ENV in message
    monkeypatch.setenv(DINOV2_WEIGHTS_ENV, str(empty))
    with pytest.raises(FileNotFoundError, match=f"\\${DINOV2_WEIGHTS_ENV}={empty}"):
        InterpolatedFID(encode, decode, feature="dinov2")


def test_missing_hub_cache_names_the_repository(no_env):
    try:
        DINOv2Features("vitg14")
    except FileNotFoundError as exc:
        message = str(exc)
    else:  # pragma: no cover - only where the real weights are cached
        pytest.skip("facebook/dinov2-giant is in this machine's Hugging Face cache")
    assert "facebook/dinov2-giant" in message and "never downloaded" in message
    assert f"{DINOV2_WEIGHTS_ENV} (unset)" in message and "huggingface-cli download" in message


class CountingDINOv2(DINOv2Features):
    """DINOv2Features that counts the images its network sees."""

    images = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images += images.shape[0]
        return super().forward(images)


def _metric(feature, bank: LatentBank | None, **kwargs) -> InterpolatedFID:
    return InterpolatedFID(encode, decode, feature=feature, bank=bank, **kwargs)


def _bank() -> LatentBank:
    bank = LatentBank(capacity=40)
    bank.add(encode(smooth_images(40, size=SIZE, seed=7)))
    return bank


def _counting_forward(net: RandomFeatures) -> list[int]:
    seen: list[int] = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


@pytest.mark.parametrize("with_bank", [True, False])
def test_both_spaces_one_pass_each(weights, with_bank):
    images = smooth_images(12, size=SIZE, seed=3)
    inception = RandomFeatures(IN_DIM)
    seen = _counting_forward(inception)
    dino = CountingDINOv2(weights=weights)
    both = _metric((inception, dino), _bank() if with_bank else None)
    for batch in images.split(4):
        both.update(batch)
    out = both.compute()
    assert list(out)[:4] == ["ifid", "rfid", "ifid_dinov2", "rfid_dinov2"]
    assert both.settings["feature"] == "RandomFeatures"
    assert both.settings["feature_spaces"] == ["dinov2"]
    # Each image once through each network: 12 real, 12 reconstructions, 12 interpolants.
    assert sum(seen) == dino.images == 36
    assert len(seen) == (6 if with_bank else 7)  # real and decodes per batch (+ compute())
    alone = _metric(DINOv2Features(weights=weights), _bank() if with_bank else None)
    for batch in images.split(4):
        alone.update(batch)
    single = alone.compute()
    torch.testing.assert_close(out["ifid_dinov2"], single["ifid"], rtol=1e-9, atol=0)
    torch.testing.assert_close(out["rfid_dinov2"], single["rfid"], rtol=1e-9, atol=0)
    first = _metric(RandomFeatures(IN_DIM), _bank() if with_bank else None)
    for batch in images.split(4):
        first.update(batch)
    assert float(first.compute()["ifid"]) == pytest.approx(float(out["ifid"]), rel=1e-12)


def test_real_statistics_kept_and_loaded(weights):
    images = smooth_images(10, size=SIZE, seed=4)
    dino = CountingDINOv2(weights=weights)
    metric = _metric((RandomFeatures(IN_DIM), dino), _bank(), reset_real_features=False)
    metric.update(images)
    first = metric.compute()
    metric.reset()
    metric.update(images)  # real statistics kept: only the 20 decodes go through DINOv2
    assert dino.images == 30 + 20
    again = metric.compute()
    torch.testing.assert_close(again["ifid_dinov2"], first["ifid_dinov2"])
    stats = metric.real_statistics()
    assert int(stats["dinov2_real_num_samples"]) == 10

    # Loaded with the DINOv2 sums: no real pass; without them: the next round computes them.
    for given, real_images in (
        (stats, 0),
        ({k: v for k, v in stats.items() if "dinov2" not in k}, 10),
    ):
        other_dino = CountingDINOv2(weights=weights)
        other = _metric((RandomFeatures(IN_DIM), other_dino), _bank(), reset_real_features=False)
        other.load_real_statistics(given)
        other.update(images)
        assert other_dino.images == real_images + 20
        torch.testing.assert_close(other.compute()["ifid_dinov2"], first["ifid_dinov2"])
        other.reset()
        other.update(images)
        assert other_dino.images == real_images + 40  # kept from then on
    other.load_real_statistics(None)
    assert int(other.dinov2_real_num_samples) == 0


def test_copies_state_dict_and_dtype(weights):
    images = smooth_images(8, size=SIZE, seed=5)
    metric = _metric((RandomFeatures(IN_DIM), DINOv2Features(weights=weights)), None)
    metric.update(images)
    expected = metric.compute()["ifid_dinov2"]
    assert not any(".net." in key for key in metric.state_dict())
    metric.persistent(True)
    keys = metric.state_dict().keys()
    assert "dinov2_real_features_sum" in keys and not any(".model." in k for k in keys)
    for copied in (metric.clone(), copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        torch.testing.assert_close(copied.compute()["ifid_dinov2"], expected)
    metric.to(torch.float16)
    assert metric.dinov2_interp_features_cov_sum.dtype == torch.float64
    assert next(metric.extras["fid_dinov2"].net.parameters()).dtype == torch.float32
    torch.testing.assert_close(metric.compute()["ifid_dinov2"], expected)


def _rank(rank: int, world: int, weights: str, with_bank: bool) -> dict:
    images = smooth_images(12, size=SIZE, seed=6)
    metric = _metric(
        (RandomFeatures(IN_DIM), DINOv2Features(weights=weights)), _bank() if with_bank else None
    )
    mine = torch.arange(rank, 12, world)  # DistributedSampler's share
    metric.update(images[mine], positions=mine)
    return {k: v for k, v in metric.compute().items() if "dinov2" in k}


@pytest.mark.parametrize("with_bank", [True, False])
def test_ddp_two_ranks_equal_one_process(weights, tmp_path, with_bank):
    single = _rank(0, 1, weights, with_bank)
    for out in run_ranks(_rank, 2, tmp_path, weights, with_bank):
        assert out.keys() == single.keys()
        for key, value in single.items():
            # Float32 features of other batch sizes differ in the last bits; the sums are exact.
            torch.testing.assert_close(out[key], value, rtol=1e-6, atol=0)


def test_monitor_logs_both_spaces_and_keeps_dinov2_real_statistics(weights):
    from ifid_callback.monitor import IFIDMonitor
    from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

    torch.manual_seed(0)
    vae, ema = TinyVAE(TinyVAEConfig(base_channels=8)), TinyVAE(TinyVAEConfig(base_channels=8))
    eval_images = smooth_images(16, size=SIZE, seed=8)

    def monitor(dino):
        found = IFIDMonitor(
            vae,
            eval_images=eval_images,
            feature=(RandomFeatures(IN_DIM), dino),
            bank_capacity=32,
            extra_vaes={"ema": ema},
        )
        for seed in range(3):
            found.observe(latents=vae.encode(smooth_images(8, size=SIZE, seed=seed)).mean)
        return found

    dino = CountingDINOv2(weights=weights)
    first = monitor(dino)
    result = first.evaluate()
    for key in ("ifid", "rfid", "ifid_dinov2", "rfid_dinov2", "ifid_dinov2_ema"):
        assert key in result, sorted(result)
    assert dino.images == 16 + 2 * 32  # the real images once, then each weights' decodes
    again = first.evaluate()
    assert dino.images == 16 + 4 * 32
    assert again["ifid_dinov2"] == pytest.approx(result["ifid_dinov2"], rel=1e-9)

    restored_dino = CountingDINOv2(weights=weights)
    restored = monitor(restored_dino)
    restored.load_state_dict(first.state_dict())
    assert restored.evaluate()["ifid_dinov2"] == pytest.approx(result["ifid_dinov2"], rel=1e-9)
    assert restored_dino.images == 2 * 32  # the DINOv2 real statistics came with the checkpoint


def test_cli_eval_reports_both_spaces(weights, tmp_path, capsys, no_env):
    import json

    from ifid_callback import cli
    from tests.test_cli import SMOKE, save_patches, save_tiny_autoencoder

    vae = save_tiny_autoencoder(tmp_path / "vae")
    images = save_patches(tmp_path / "images", 8)
    results = {}
    for name, feature in (("both", f"{SMOKE},dinov2"), ("dinov2", "dinov2")):
        out = tmp_path / f"{name}.json"
        argv = ["eval", "--vae", str(vae), "--images", str(images), "--feature", feature]
        argv += ["--dinov2-weights", weights, "--json", str(out), "--no-progress"]
        assert cli.main(argv) == 0
        results[name] = json.loads(out.read_text())
    assert "iFID_dinov2" in capsys.readouterr().out
    assert results["both"]["ifid_dinov2"] == pytest.approx(results["dinov2"]["ifid"], rel=1e-9)
    assert results["both"]["rfid_dinov2"] == pytest.approx(results["dinov2"]["rfid"], rel=1e-9)
    assert results["both"]["ifid"] != pytest.approx(results["dinov2"]["ifid"])
