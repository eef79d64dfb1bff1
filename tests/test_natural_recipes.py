"""The natural family's recipes (EQ-VAE-style, spectral, under-trained, aligned to a random
network) and its design: 3 shapes x 16 recipes, 4 probe tokens each, a second seed for a third."""

from __future__ import annotations

import math

import pytest
import torch

from ifid_callback.probes.digits_study import DIGITS_FAMILY_A
from ifid_callback.probes.natural_family import (
    NATURAL_SHAPES,
    natural_members,
    natural_study_config,
    second_seed_names,
)
from ifid_callback.probes.recipe_losses import RandomConvTeacher, equivariance_loss, spectral_loss
from ifid_callback.probes.study_config import StudyConfig
from ifid_callback.probes.zoo import ZooMember, load_vae_checkpoint, train_zoo_member

torch.set_num_threads(1)


def test_losses_by_hand():
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(equivariance_loss(x, x, lambda z: z)) == 0.0
    assert float(equivariance_loss(x, x, lambda z: z + 0.5)) == pytest.approx(0.25)
    i = torch.arange(4, dtype=torch.float64)
    high = torch.cos(math.pi * 3 * (2 * i + 1) / 8)  # DCT index 3 of 4: above half Nyquist
    z = (high[:, None] * torch.ones(4)[None, :]).reshape(1, 1, 4, 4)
    assert float(spectral_loss(z)) == pytest.approx(1.0)
    assert float(spectral_loss(torch.ones(1, 1, 4, 4))) == pytest.approx(0.0)


def test_teacher_is_fixed_and_pooled_to_the_latent():
    x = torch.randn(3, 1, 8, 8)
    a, b = RandomConvTeacher(1, 2), RandomConvTeacher(1, 2)
    assert a(x).shape == (3, 32, 2, 2) and torch.equal(a(x), b(x))
    assert not any(p.requires_grad for p in a.parameters())


def test_existing_members_keep_their_recorded_settings():
    for member in DIGITS_FAMILY_A:
        assert set(member.to_dict()) == {
            "name", "latent_channels", "kl_weight", "latent_noise", "align_weight", "objective"
        }  # fmt: skip
    with pytest.raises(ValueError, match="steps_fraction"):
        ZooMember("x", steps_fraction=0.0)


@pytest.mark.parametrize(
    ("shape", "member"),
    [
        ("1x8x8", ZooMember("eq", equivariance_weight=1.0)),
        ("4x4x4", ZooMember("spec", spectral_weight=0.1)),
        ("16x2x2", ZooMember("under", steps_fraction=0.5)),
        ("16x2x2", ZooMember("align", kl_weight=1e-3, align_weight=0.1)),
    ],
)
def test_recipes_train_at_every_shape(tmp_path, shape, member):
    (trained,) = natural_members((shape,), (member,))
    channels, downsamples, _ = NATURAL_SHAPES[shape]
    side = 8 // 2**downsamples
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    teacher = RandomConvTeacher(1, side) if member.align_weight else None
    path = train_zoo_member(
        trained, images, tmp_path / "m.ckpt", steps=4, batch_size=8, base_channels=8,
        progress=False, teacher=teacher,
    )  # fmt: skip
    vae = load_vae_checkpoint(path)
    assert vae.encode(images[:2]).mean.shape == (2, channels, side, side)
    saved = torch.load(path, weights_only=True)
    assert saved["hyper_parameters"]["zoo_member"]["downsamples"] == downsamples
    if member.steps_fraction < 1:
        assert saved["hyper_parameters"]["stop_at"] == 2
    for key, weight in (("equivariance", "equivariance_weight"), ("spectral", "spectral_weight")):
        assert (key in saved["final_losses"]) == (getattr(member, weight) > 0)


def test_design_48_vaes_equal_latent_size_equal_tokens_and_second_seeds():
    members = natural_members()
    names = [m.name for m in members]
    assert len(members) == 48 and len(set(names)) == 48
    for m in members:
        channels, downsamples, patch = NATURAL_SHAPES[m.name.rsplit("-", 1)[1]]
        side = 8 // 2**downsamples
        assert channels * side * side == 64 and (side // patch) ** 2 == 4
    second = second_seed_names(names, 1 / 3, seed=0)
    assert len(second) == 16 and second == second_seed_names(names, 1 / 3, seed=0)
    zoo = {"specs": [f"/z/{n}.ckpt" for n in names], "names": names, "groups": {}}

    class _Settings:
        out, num_samples, t_grid, seed, second_seed_fraction = "/tmp/none", 100, [0.5], 0, 1 / 3
        probe_steps, probe_batch_size, probe_lr, probe_ema = 10, 8, 1e-3, 0.999
        probe_overrides = {"depth": 1, "hidden_size": 32, "num_heads": 2}
        sampler, sampling_steps, batch_size = "euler", 2, 64

    config = natural_study_config(_Settings(), zoo)
    assert sum(config.seeds_of(n) for n in names) == 64
    assert config.probe_config(0, "ae-1x8x8").patch_size == 4
    assert config.probe_config(1, "ae-16x2x2").patch_size == 1
    assert config.probe_config(0, "ae-16x2x2").seed == 0 and config.probe_config(1).seed == 1
    with pytest.raises(ValueError, match="probe_by_vae names unknown VAEs"):
        StudyConfig(vaes=["a.ckpt"], out_dir="/tmp/x", probe_by_vae={"b": {"patch_size": 1}})
