"""load_vae: the ways a user names a VAE (a diffusers directory as str or Path, a factory)."""

from pathlib import Path

import pytest
import torch

from ifid_callback.loading import load_vae
from tests.test_cli import save_tiny_autoencoder

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    return save_tiny_autoencoder(tmp_path_factory.mktemp("vae"))


@pytest.mark.parametrize("as_path", [True, False])
def test_a_diffusers_directory_loads_given_as_str_or_path(vae_dir, as_path):
    vae = load_vae(vae_dir if as_path else str(vae_dir))
    assert type(vae).__name__ == "AutoencoderKL"
    assert not vae.training
    x = torch.zeros(1, 3, 16, 16)
    assert vae.decode(vae.encode(x).latent_dist.mean).sample.shape == x.shape


def test_a_bad_spec_names_the_expected_forms(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_vae(tmp_path)
    with pytest.raises(ValueError, match="package.module:factory"):
        load_vae("no_such_module_xyz:build")
