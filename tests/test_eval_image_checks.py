"""Evaluation images that the VAE cannot take, or that differ from the training images, are named
in the user's terms when the monitor/callback is set up (or at the first training step), not with
a raw torch error or a misleading message at the first evaluation."""

import warnings

import pytest
import torch

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

SIZE = 16


def _vae():
    torch.manual_seed(0)
    return TinyVAE(TinyVAEConfig(base_channels=8))


def _monitor(vae, eval_images, **kwargs):
    settings = dict(feature=RandomFeatures(eval_images[0].numel()), bank_capacity=32)
    settings.update(kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*rank <.*")
        return IFIDMonitor(vae, eval_images=eval_images, **settings)


def test_channels_last_eval_images_are_named_at_construction():
    images = smooth_images(8, 3, SIZE).permute(0, 2, 3, 1).contiguous()  # (N, H, W, C)
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)") as info:
        _monitor(_vae(), images)
    assert "(8, 16, 16, 3)" in str(info.value)


def test_grayscale_eval_images_are_named_at_construction():
    images = smooth_images(8, 1, SIZE)
    with pytest.raises(ValueError, match=r"grayscale.*takes 3 channels") as info:
        _monitor(_vae(), images)
    assert "repeat" in str(info.value) or "expand" in str(info.value)


def test_wrong_channel_count_is_named():
    with pytest.raises(ValueError, match=r"4 channels.*takes 3"):
        _monitor(_vae(), smooth_images(8, 4, SIZE))


def test_setup_probe_leaves_the_vae_and_random_state_alone():
    vae = _vae()
    vae.train()
    state = torch.random.get_rng_state()
    _monitor(vae, smooth_images(8, 3, SIZE), sample_posterior=True)
    assert vae.training and all(m.training for m in vae.modules())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_eval_images_of_another_size_than_training_are_named_at_the_first_step():
    vae = _vae()
    monitor = _monitor(vae, smooth_images(8, 3, SIZE // 2))  # 8x8 evaluation images
    train = smooth_images(4, 3, SIZE, seed=1)  # 16x16 training images
    with torch.no_grad():
        latents = vae.encode(train).mean
    with pytest.raises(ValueError, match=r"size of the training images") as info:
        monitor.observe(latents=latents, step=1)
    message = str(info.value)
    assert "8x8" in message and "16x16" in message and "same encoder" not in message
    assert len(monitor.bank) == 0 and monitor.steps_observed == 0  # nothing learned


def test_restored_bank_of_another_image_size_is_named_at_evaluation():
    vae = _vae()
    big = _monitor(vae, smooth_images(8, 3, SIZE))
    with torch.no_grad():
        big.observe(latents=vae.encode(smooth_images(4, 3, SIZE, seed=1)).mean, step=1)
    small = _monitor(vae, smooth_images(8, 3, SIZE // 2))
    small.load_state_dict(big.state_dict())
    with pytest.raises(ValueError, match=r"size of the training images"):
        small.evaluate()


def test_lightning_callback_reports_channels_last_at_setup(tmp_path):
    pytest.importorskip("lightning")
    from tests import test_lightning as tl

    images = smooth_images(24, 3, SIZE, seed=5).permute(0, 2, 3, 1).contiguous()
    callback = tl.IFIDCallback(eval_images=images, feature=RandomFeatures(3 * SIZE * SIZE))
    module = tl.VAEModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = tl._trainer(tmp_path, [callback], max_steps=4, logger=False)
    with pytest.raises(ValueError, match=r"channels-last"):
        tl._fit(trainer, module)
    for k, v in module.state_dict().items():  # failed before any training step
        assert torch.equal(v, before[k]), k


def test_lightning_callback_reports_other_size_at_the_first_step(tmp_path):
    pytest.importorskip("lightning")
    from tests import test_lightning as tl

    images = smooth_images(24, 3, SIZE // 2, seed=5)  # training batches are 16x16
    callback = tl.IFIDCallback(eval_images=images, feature=RandomFeatures(3 * 8 * 8))
    trainer = tl._trainer(tmp_path, [callback], max_steps=4, logger=False)
    with pytest.raises(ValueError, match=r"8x8.*size of the training images.*16x16"):
        tl._fit(trainer, tl.VAEModule())
    assert callback.monitor.steps_observed == 0


def test_training_latents_of_another_layout_are_named():
    vae = _vae()
    monitor = _monitor(vae, smooth_images(8, 3, SIZE))
    with torch.no_grad():
        posterior = vae.encode(smooth_images(4, 3, SIZE, seed=1))
    moments = torch.cat([posterior.mean, posterior.logvar], dim=1)  # 2C channels
    with pytest.raises(ValueError, match=r"not what the VAE's encoder returns"):
        monitor.observe(latents=moments, step=1)
    assert len(monitor.bank) == 0
    monitor.observe(latents=posterior.mean, step=1)  # the right latents are then accepted
    assert len(monitor.bank) == 4
