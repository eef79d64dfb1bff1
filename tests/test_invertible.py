"""Invertible latent maps of the positive control: reconstructions stay those of the base VAE."""

from __future__ import annotations

import pytest
import torch

from ifid_callback.probes.invertible import (
    ROUND_TRIP_TOLERANCE,
    ChannelRotation,
    PositionShuffle,
    SmoothWarp,
    ValueShuffle,
    WrappedVAE,
    build_latent_map,
    round_trip_error,
)
from ifid_callback.probes.zoo import (
    ZooMember,
    load_vae_checkpoint,
    train_zoo_member,
    write_wrapped_checkpoint,
)
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

torch.set_num_threads(1)
SCALE = 1.7


def _latents(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 4, 4, generator=g) * SCALE + 0.3


MAPS = {
    "rotation": lambda: ChannelRotation(4, seed=0),
    "warp0.5": lambda: SmoothWarp(0.5, SCALE),
    "warp0.9": lambda: SmoothWarp(0.9, SCALE),
    "shuffle-b2": lambda: ValueShuffle(SCALE, block=2),
    "shuffle-b24": lambda: ValueShuffle(SCALE, block=24),
    "positions-b2": lambda: PositionShuffle((4, 4, 4), block=2),
    "positions-b4": lambda: PositionShuffle((4, 4, 4), block=4),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_round_trip(name):
    m = MAPS[name]()
    z = _latents()
    y = m(z)
    assert y.shape == z.shape and y.dtype == z.dtype
    assert not torch.equal(y, z)
    if m.exact:
        assert torch.equal(m.inverse(y), z)
    else:
        assert round_trip_error(m, z) <= ROUND_TRIP_TOLERANCE
    again = build_latent_map(m.spec())
    assert torch.equal(again(z), y)


def _vae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = TinyVAE(TinyVAEConfig(in_channels=1, base_channels=8, downsamples=1))
    return vae.eval()


@pytest.mark.parametrize("name", sorted(MAPS))
def test_wrapped_reconstructions_equal_the_base(name):
    vae = _vae()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    wrapped = WrappedVAE(vae, MAPS[name]()).eval()
    with torch.no_grad():
        base = vae.decode(vae.encode(x).mean)
        got = wrapped.decode(wrapped.encode(x))
    if wrapped.latent_map.exact:
        assert torch.equal(got, base)  # bit-identical
    else:
        # A latent off by a few float32 rounding steps; the decoder passes on that much.
        assert (got - base).abs().max() <= 1e-5


def test_rotation_and_positions_are_isometries():
    z = _latents(64).flatten(1)
    for m in (ChannelRotation(4, seed=3), PositionShuffle((4, 4, 4), block=4, seed=1)):
        y = m(z.view(-1, 4, 4, 4)).flatten(1)
        torch.testing.assert_close(y @ y.T, z @ z.T, rtol=1e-5, atol=1e-4)


def test_value_shuffle_doses_grow_from_local_to_global():
    z = _latents(2048)
    moved = {}
    for block in (2, 4, 8, 24):
        m = ValueShuffle(SCALE, block=block)
        y = m(z)
        inside = (z >= -m.radius) & (z < m.radius)
        # No fixed points: every value in range moves by a whole number of bins.
        steps = ((y - z)[inside] / m.width).double()
        assert (steps.round().abs() >= 1).all()
        assert torch.allclose(steps, steps.round(), atol=1e-3)
        assert torch.equal(y[~inside], z[~inside])
        moved[block] = (y - z).abs()[inside].mean().item()
        if block == 2:
            assert steps.round().abs().max() == 1  # neighbours swap
    assert moved[2] < moved[4] < moved[8] < moved[24]


def test_bad_arguments():
    with pytest.raises(ValueError, match="strength"):
        SmoothWarp(1.0, 1.0)
    with pytest.raises(ValueError, match="block"):
        ValueShuffle(1.0, block=5)
    with pytest.raises(ValueError, match="block"):
        PositionShuffle((4, 4, 4), block=3)
    with pytest.raises(ValueError, match="unknown latent map"):
        build_latent_map({"kind": "swirl"})


def test_wrapped_checkpoint_round_trip(tmp_path):
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    base = train_zoo_member(
        ZooMember("ae", 4),
        images,
        tmp_path / "ae.ckpt",
        steps=2,
        batch_size=16,
        base_channels=8,
        downsamples=1,
        progress=False,
    )
    spec = ValueShuffle(SCALE, block=4).spec()
    path = write_wrapped_checkpoint(base, tmp_path / "ae-shuffle.ckpt", spec)
    wrapped = load_vae_checkpoint(path)
    plain = load_vae_checkpoint(base)
    assert isinstance(wrapped, WrappedVAE) and wrapped.latent_map.spec() == spec
    with torch.no_grad():
        z = plain.encode(images).mean
        assert torch.equal(wrapped.encode(images), wrapped.latent_map(z))
        assert (wrapped.decode(wrapped.encode(images)) - plain.decode(z)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="already wrapped"):
        write_wrapped_checkpoint(path, tmp_path / "twice.ckpt", spec)
