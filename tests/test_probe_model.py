"""SiT probe model, latent normaliser, samplers and image helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ifid_callback.probes.sampling import (
    decode_in_batches,
    inverse_time_shift,
    sample,
    save_image_grid,
    time_grid,
    time_shift,
)
from ifid_callback.probes.sit import SIT_SIZES, LatentNormalizer, SiT, SiTConfig
from ifid_callback.probes.train import resolve_time_shift

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model: SiT, seed: int = 0) -> SiT:
    """Give every parameter random values so the (zero-initialised) output is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _tiny(patch_size: int = 2, num_classes: int = 0, input_size: int = 8, channels: int = 4) -> SiT:
    torch.manual_seed(0)
    return SiT(
        SiTConfig.from_name(
            "tiny",
            input_size=input_size,
            in_channels=channels,
            patch_size=patch_size,
            num_classes=num_classes,
            depth=2,
            hidden_size=64,
        )
    )


@pytest.mark.parametrize("patch_size", [1, 2, 4])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_zero_init_outputs_exactly_zero(patch_size, num_classes):
    model = _tiny(patch_size, num_classes)
    x = torch.randn(3, 4, 8, 8)
    y = torch.tensor([0, 4, 5]) if num_classes else None  # 5 is the null class
    out = model(x, torch.tensor([0.0, 0.5, 1.0]), y)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0
    if num_classes:
        assert torch.count_nonzero(model.forward_with_cfg(x, 0.3, y, 4.0)) == 0


def test_full_size_tiny_is_zero_at_init_and_shapes_follow_patch_size():
    for p in (1, 2, 4):
        model = SiT(SiTConfig.from_name("tiny", input_size=8, in_channels=4, patch_size=p))
        assert model.pos_embed.shape == (1, (8 // p) ** 2, SIT_SIZES["tiny"][1])
        assert torch.count_nonzero(model(torch.randn(2, 4, 8, 8), 0.5)) == 0


def test_sit_s_parameter_count_matches_published_size():
    # DiT/SiT-S/2 on 32x32x4 latents with 1000 classes: about 33M parameters.
    cfg = SiTConfig.from_name("S", input_size=32, in_channels=4, num_classes=1000)
    with torch.device("meta"):
        model = SiT(cfg)
    count = sum(p.numel() for p in model.parameters())
    assert 32e6 < count < 34e6


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="divisible"):
        SiTConfig(input_size=6, in_channels=4, patch_size=4, hidden_size=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        SiTConfig(input_size=6, in_channels=4, patch_size=3, hidden_size=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="num_heads"):
        SiTConfig(input_size=8, in_channels=4, hidden_size=64, depth=1, num_heads=5)
    with pytest.raises(ValueError, match="unknown SiT size"):
        SiTConfig.from_name("M", input_size=8, in_channels=4)
    cfg = SiTConfig.from_name("B", input_size=16, in_channels=32, patch_size=1, num_classes=10)
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads) == SIT_SIZES["B"] == (12, 768, 12)
    assert SiTConfig.from_dict(cfg.to_dict()) == cfg


def test_forward_rejects_bad_inputs():
    model = _tiny(num_classes=0)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(2, 4, 8, 8), 0.5, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="conditional"):
        model.forward_with_cfg(torch.randn(2, 4, 8, 8), 0.5, torch.tensor([0, 1]), 2.0)
    with pytest.raises(ValueError, match="t must"):
        model(torch.randn(2, 4, 8, 8), torch.rand(3))


def _reference_pos_embed(dim: int, grid: int) -> np.ndarray:
    """Independent numpy version of the MAE/DiT 2-D sin-cos embedding (row half, column half)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows = np.repeat(np.arange(grid), grid).astype(np.float64)
    cols = np.tile(np.arange(grid), grid).astype(np.float64)
    return np.concatenate([one_d(dim // 2, rows), one_d(dim // 2, cols)], axis=1)


def test_pos_embed_is_fixed_buffer_matching_reference():
    model = _tiny(patch_size=2)
    names = {n for n, _ in model.named_parameters()}
    assert not any("pos_embed" in n for n in names)
    assert "pos_embed" not in model.state_dict()  # rebuilt from the config
    np.testing.assert_allclose(model.pos_embed[0].numpy(), _reference_pos_embed(64, 4), atol=1e-6)
    before = model.pos_embed.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _randomize(model)
    model(torch.randn(2, 4, 8, 8), 0.5).square().mean().backward()
    opt.step()
    assert torch.equal(model.pos_embed, before)


def test_cfg_scale_one_is_conditional_and_scale_s_extrapolates():
    model = _randomize(_tiny(num_classes=3)).eval()
    x = torch.randn(4, 4, 8, 8)
    y = torch.tensor([0, 1, 2, 1])
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    cond = model(x, t, y)
    uncond = model(x, t, torch.full_like(y, 3))
    assert torch.equal(model.forward_with_cfg(x, t, y, 1.0), cond)
    guided = model.forward_with_cfg(x, t, y, 2.5)
    torch.testing.assert_close(guided, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-5)
    # Guidance acts on every channel, not only the first three.
    assert all(not torch.allclose(guided[:, c], cond[:, c]) for c in range(4))
    # y=None means the null class.
    assert torch.equal(model(x, t, None), uncond)


def test_time_shift_endpoints_monotone_and_inverse():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for s in (0.25, 0.5, 1.0, 2.0, 4.0):
        shifted = time_shift(t, s)
        assert shifted[0] == 0 and shifted[-1] == 1
        assert torch.all(shifted[1:] > shifted[:-1])
        torch.testing.assert_close(inverse_time_shift(shifted, s), t)
    assert time_shift(torch.tensor(0.5), 3.0).item() == pytest.approx(1.5 / 2.0)  # 3*.5/(1+2*.5)
    assert torch.equal(time_shift(t, None), t)
    with pytest.raises(ValueError):
        time_shift(t, -1.0)
    assert resolve_time_shift("auto", (4, 32, 32)) == pytest.approx(1.0)
    assert resolve_time_shift("auto", (4, 8, 8)) == pytest.approx(0.25)
    assert resolve_time_shift("auto", (32, 16, 16)) == pytest.approx(math.sqrt(2))
    assert resolve_time_shift(None, (4, 8, 8)) is None


def test_time_grid():
    grid = time_grid(10, 1.0, 2.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == 11
    assert torch.all(grid[1:] < grid[:-1])
    torch.testing.assert_close(grid, time_shift(torch.linspace(1, 0, 11, dtype=torch.float64), 2.0))
    partial = time_grid(4, 0.3, 2.0)
    assert partial[0] == pytest.approx(0.3) and partial[-1] == 0.0
    with pytest.raises(ValueError):
        time_grid(0)
    with pytest.raises(ValueError):
        time_grid(5, 1.5)


def test_latent_normalizer_fit_round_trip_and_state():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, 4, 4, generator=g) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
    z = z + torch.tensor([2.0, -1.0, 0.0]).view(1, 3, 1, 1)
    norm = LatentNormalizer(3).fit(z, chunk_size=7)
    arr = z.permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    np.testing.assert_allclose(norm.mean.numpy(), arr.mean(1), rtol=1e-6)
    np.testing.assert_allclose(norm.std.numpy(), arr.std(1), rtol=1e-5)  # population std
    torch.testing.assert_close(norm.denormalize(norm.normalize(z)), z)
    zn = norm.normalize(z)
    torch.testing.assert_close(zn.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    # Part of the model's state_dict; a bad fit leaves it unchanged.
    model = _tiny(channels=3)
    model.normalizer.fit(z)
    assert {"normalizer.mean", "normalizer.std"} <= set(model.state_dict())
    saved = model.normalizer.mean.clone()
    bad = z.clone()
    bad[3, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.normalizer.fit(bad)
    assert torch.equal(model.normalizer.mean, saved)
    with pytest.raises(ValueError, match="shape"):
        norm.normalize(torch.randn(2, 4, 4, 4))


class _GaussianVelocity(torch.nn.Module):
    """Exact velocity for data ~ N(m, sd^2) per coordinate under x_t = (1-t) x + t eps."""

    def __init__(self, m: float, sd: float) -> None:
        super().__init__()
        self.m, self.var = m, sd**2

    def forward(self, x, t, y=None):
        t = float(t)
        v_t = (1 - t) ** 2 * self.var + t**2
        centred = x - (1 - t) * self.m
        e_eps = t / v_t * centred
        e_x0 = self.m + (1 - t) * self.var / v_t * centred
        return e_eps - e_x0


@pytest.mark.parametrize(
    ("sampler", "steps", "shift"),
    [
        ("euler", 200, None),
        ("heun", 30, None),
        ("heun", 30, 3.0),
        ("sde", 400, None),
        ("sde", 400, 0.5),
    ],
)
def test_samplers_recover_gaussian_with_exact_velocity(sampler, steps, shift):
    model = _GaussianVelocity(m=1.5, sd=0.5)
    g = torch.Generator().manual_seed(0)
    x = sample(model, (20000, 1, 1, 1), sampler=sampler, steps=steps, time_shift=shift, generator=g)
    # Monte-Carlo error of the mean is 0.5/sqrt(20000) ~ 0.0035; of the std ~ 0.0025.
    assert x.mean().item() == pytest.approx(1.5, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("sampler", ["euler", "heun", "sde"])
def test_sampling_from_partially_noised_latents(sampler):
    model = _GaussianVelocity(m=-1.0, sd=2.0)
    g = torch.Generator().manual_seed(1)
    x0 = -1.0 + 2.0 * torch.randn(20000, 1, 1, 1, generator=g)
    t = 0.4
    x_t = (1 - t) * x0 + t * torch.randn(x0.shape, generator=g)
    out = sample(model, x0.shape, sampler=sampler, steps=200, generator=g, t_start=t, x_start=x_t)
    assert out.mean().item() == pytest.approx(-1.0, abs=0.06)
    assert out.std().item() == pytest.approx(2.0, abs=0.06)
    # Starting near data keeps samples close to their source.
    near = sample(
        model,
        x0.shape,
        sampler=sampler,
        steps=20,
        generator=g,
        t_start=0.02,
        x_start=0.98 * x0 + 0.02 * torch.randn(x0.shape, generator=g),
    )
    assert (near - x0).abs().mean().item() < 0.05
    with pytest.raises(ValueError, match="x_start"):
        sample(model, x0.shape, t_start=0.5)


def test_sample_cfg_interval_and_determinism():
    model = _randomize(_tiny(num_classes=3)).eval()
    labels = torch.tensor([0, 1, 2, 0])
    kw = {"steps": 5, "labels": labels}
    base = sample(model, 4, generator=torch.Generator().manual_seed(0), **kw)
    again = sample(model, 4, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(base, again) and base.shape == (4, 4, 8, 8)
    # An interval that holds no grid time switches guidance off entirely.
    off = sample(
        model,
        4,
        generator=torch.Generator().manual_seed(0),
        cfg_scale=4.0,
        cfg_interval=(0.0, 0.0),
        **kw,
    )
    assert torch.equal(off, base)
    on = sample(
        model,
        4,
        generator=torch.Generator().manual_seed(0),
        cfg_scale=4.0,
        cfg_interval=(0.0, 1.0),
        **kw,
    )
    assert not torch.allclose(on, base)
    with pytest.raises(ValueError, match="labels"):
        sample(model, 4, cfg_scale=2.0)
    with pytest.raises(ValueError, match="sampler"):
        sample(model, 4, sampler="dopri5")
    with pytest.raises(ValueError, match="cfg_interval"):
        sample(model, 4, labels=labels, cfg_scale=2.0, cfg_interval=(0.8, 0.2))


def test_decode_in_batches_and_image_grid(tmp_path):
    weight = torch.randn(3, 4)

    def decode(z):
        return torch.tanh(
            torch.einsum("oc,nchw->nohw", weight, z)
            .repeat_interleave(2, -1)
            .repeat_interleave(2, -2)
        )

    z = torch.randn(10, 4, 3, 3)
    images = decode_in_batches(decode, z, batch_size=3)
    torch.testing.assert_close(images, decode(z))
    with pytest.raises(ValueError, match="NaN"):
        decode_in_batches(lambda t: t * float("nan"), z, batch_size=4)

    grid_imgs = torch.full((5, 3, 4, 6), -1.0)
    grid_imgs[1] = 1.0
    grid_imgs[4, 0] = 2.0  # clamped to 1 -> 255
    path = save_image_grid(grid_imgs, tmp_path / "grid.png", nrow=2, padding=1)
    png = np.asarray(Image.open(path))
    assert png.shape == (3 * 4 + 4 * 1, 2 * 6 + 3 * 1, 3)  # 3 rows, 2 columns
    assert png[1, 1 + 6 + 1].tolist() == [255, 255, 255]  # image 1: row 0, column 1
    assert png[1, 1].tolist() == [0, 0, 0]
    assert png[1 + 2 * 5, 1].tolist() == [255, 0, 0]  # image 4: row 2, column 0
    gray = save_image_grid(torch.zeros(2, 1, 4, 4), tmp_path / "g.png")
    assert np.asarray(Image.open(gray)).shape == (8, 14)  # default padding 2
    with pytest.raises(ValueError):
        save_image_grid(torch.zeros(2, 2, 4, 4), tmp_path / "bad.png")
