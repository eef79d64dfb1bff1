"""IFIDMonitor on its own: latent sources, exact bank, evaluation, grid, state round trip."""

import numpy as np
import pytest
import torch
from torch import nn

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.diffusers_vae import latent_hook_point, vae_callables
from ifid_callback.grid import image_grid, save_png
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

SIZE = 16
IN_DIM = 3 * SIZE * SIZE
EVAL = smooth_images(24, 3, SIZE, seed=5)


def _vae(seed=0):
    torch.manual_seed(seed)
    return TinyVAE(TinyVAEConfig(base_channels=8))


def _monitor(vae, **kwargs):
    settings = dict(eval_images=EVAL, feature=RandomFeatures(IN_DIM), bank_capacity=32)
    settings.update(kwargs)
    return IFIDMonitor(vae, **settings)


def _batches(n, seed=10):
    return [smooth_images(8, 3, SIZE, seed=seed + i) for i in range(n)]


def test_evaluation_matches_the_metric_on_the_same_bank():
    vae = _vae()
    monitor = _monitor(vae)
    batches = _batches(5)  # 40 latents into a bank of 32: the oldest 8 are gone
    for x in batches:
        monitor.observe(latents=vae.encode(x).mean, step=None)
    result = monitor.evaluate()
    assert result["bank_size"] == 32 and result["step"] == 5

    bank = LatentBank(32)
    bank.add(torch.cat([vae.encode(x).mean for x in batches[1:]]).detach())
    reference = InterpolatedFID(vae=vae, feature=RandomFeatures(IN_DIM), bank=bank)
    reference.update(EVAL)
    expected = {k: float(v) for k, v in reference.compute().items()}
    assert result["ifid"] == pytest.approx(expected["ifid"], rel=1e-9)
    assert result["rfid"] == pytest.approx(expected["rfid"], rel=1e-9)
    # The real statistics are cached: a second evaluation does not featurize the real images.
    calls = monitor.metric.feature_net.calls
    assert monitor.evaluate()["ifid"] == pytest.approx(result["ifid"], rel=1e-12)
    assert monitor.metric.feature_net.calls - calls == 1  # one pass: [recon, interp] together


def test_three_latent_sources_fill_the_same_bank():
    vae = _vae()
    x = _batches(1)[0]
    mean = vae.encode(x).mean.detach()
    from_outputs = _monitor(vae, latent_source="outputs")
    from_outputs.observe(outputs={"loss": torch.tensor(0.0), "latents": mean})

    hooked = _monitor(vae, latent_source="hook")  # hook point found from the VAE
    hooked.attach()
    vae.train()
    vae.loss(x)  # a training forward: the hook collects the posterior means
    vae.eval()
    vae.encode(x)  # an eval forward is not collected
    hooked.observe()
    hooked.detach()

    encoded = _monitor(vae, latent_source="encode", encode_fraction=1.0)
    encoded.observe(images=x)
    for monitor in (from_outputs, hooked, encoded):
        assert torch.allclose(monitor.bank.vectors, mean.reshape(8, -1), atol=1e-6)

    half = _monitor(vae, latent_source="encode", encode_fraction=0.5)
    assert half.observe(images=x) == 4


def test_hook_on_a_whole_model_reads_the_outputs_key():
    vae = _vae()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, pixel_values):
            return vae.loss(pixel_values)

    model = Model().train()
    monitor = _monitor(vae)
    monitor.attach(model)
    model(_batches(1)[0])
    model(_batches(1, seed=20)[0])  # gradient accumulation: two forwards, one step
    assert monitor.observe(step=1) == 16
    with pytest.raises(ValueError, match="nothing to insert"):
        monitor.observe(step=2)


def test_exact_bank_reencodes_with_the_current_encoder():
    vae = _vae()
    monitor = _monitor(vae, exact_bank=True, bank_capacity=16)
    batches = _batches(3)
    for x in batches:
        monitor.observe(latents=vae.encode(x).mean, images=x)
    with torch.no_grad():  # the encoder changes after the latents were taken
        for p in vae.encoder.parameters():
            p.mul_(1.1)
    monitor.refresh_index()
    current = torch.cat([vae.encode(x).mean for x in batches[1:]]).detach()
    assert torch.allclose(monitor.bank.vectors, current.reshape(16, -1), atol=1e-5)
    assert monitor.bank.ids.tolist() == list(range(8, 24))
    with pytest.raises(ValueError, match="exact_bank=True keeps the source image"):
        monitor.observe(latents=current[:4])


def test_evaluation_restores_modes_and_leaves_no_grad():
    vae = _vae().train()
    vae.decoder[0].eval()  # a sub-module the user froze in eval mode stays so
    monitor = _monitor(vae)
    monitor.observe(latents=vae.encode(_batches(1)[0]).mean)
    seen = []
    handle = vae.encoder.register_forward_hook(
        lambda m, a, o: seen.append((m.training, torch.is_grad_enabled()))
    )
    monitor.evaluate()
    handle.remove()
    assert seen and all(mode == (False, False) for mode in seen)
    assert vae.training and vae.encoder.training and not vae.decoder[0].training
    assert all(p.grad is None for p in vae.parameters())


def test_schedule_refresh_and_due():
    vae = _vae()
    monitor = _monitor(vae, refresh_every_n_steps=3, eval_every_n_steps=4, bank_capacity=64)
    refreshed, evaluated = [], []
    for step, x in enumerate(_batches(8), 1):
        monitor.observe(latents=vae.encode(x).mean, step=step)
        if monitor.last_refresh_step == step:
            refreshed.append(step)
        if monitor.maybe_evaluate(step) is not None:
            evaluated.append(step)
    assert refreshed == [1, 4, 7] and evaluated == [4, 8]
    # The index built at step 7 (56 rows) served the evaluation at step 8 (64 rows by then).
    assert [h["bank_size"] for h in monitor.history] == [32, 56]


def test_state_round_trip_and_real_statistics_cache():
    vae = _vae()
    monitor = _monitor(vae, eval_every_n_steps=2)
    for step, x in enumerate(_batches(4), 1):
        monitor.observe(latents=vae.encode(x).mean, step=step)
        monitor.maybe_evaluate(step)
    state = monitor.state_dict()
    restored = _monitor(vae, eval_every_n_steps=2)
    restored.load_state_dict(state)
    again = restored.state_dict()
    for key in ("step", "steps_observed", "last_eval_step", "history", "eval_fingerprint"):
        assert again[key] == state[key]
    assert torch.equal(again["bank"]["vectors"], state["bank"]["vectors"])
    features = restored.metric.feature_net
    calls = features.calls
    assert restored.evaluate()["ifid"] == pytest.approx(monitor.evaluate()["ifid"], rel=1e-12)
    # The real sums came from the state; the real images pass once more for the per-image rows
    # of the standard errors, which the state does not carry (kept from then on).
    assert features.calls - calls == 2
    # Another evaluation set: the cached statistics are not used.
    other = _monitor(vae, eval_images=smooth_images(24, 3, SIZE, seed=6))
    with pytest.warns(UserWarning, match="another evaluation set"):
        other.load_state_dict(state)
    assert other.state_dict()["real_statistics"] is None
    # A smaller bank keeps the newest rows.
    small = _monitor(vae, bank_capacity=8)
    small.load_state_dict(state)
    assert torch.equal(small.bank.vectors, state["bank"]["vectors"][-8:])


def test_grid_rows_columns_and_png(tmp_path):
    vae = _vae()
    monitor = _monitor(vae, grid_rows=3)
    monitor.observe(latents=vae.encode(_batches(1)[0]).mean)
    grid = monitor.render_grid(labels=False)
    assert grid.shape == (3, 3 * 18 + 2, 4 * 18 + 2)
    assert 0.0 <= float(grid.min()) and float(grid.max()) <= 1.0
    # First cell is the first evaluation image mapped from [-1, 1] to [0, 1].
    assert torch.allclose(grid[:, 2:18, 2:18], (EVAL[0] + 1) / 2, atol=1e-6)
    save_png(grid, tmp_path / "grid.png", scale=2)
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "grid.png"))
    assert img.shape == (2 * grid.shape[1], 2 * grid.shape[2], 3)
    grey = image_grid([torch.zeros(2, 1, 4, 4)], padding=0)
    assert torch.allclose(grey, torch.full((3, 8, 4), 0.5))
    with pytest.raises(ValueError, match="same number"):
        image_grid([torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4)])


def test_eval_set_from_a_dataset_is_seeded_and_checked():
    vae = _vae()
    data = torch.utils.data.TensorDataset(smooth_images(40, 3, SIZE, seed=7))
    a = _monitor(vae, eval_images=data, num_eval_images=20, seed=3)
    b = _monitor(vae, eval_images=data, num_eval_images=20, seed=3)
    assert torch.equal(a.eval_set.indices, b.eval_set.indices) and len(a.eval_set.indices) == 20
    with pytest.raises(ValueError, match="holds only 40"):
        _monitor(vae, eval_images=data, num_eval_images=41)
    with pytest.raises(ValueError, match="rescale"):
        _monitor(vae, eval_images=EVAL * 3)
    with pytest.raises(ValueError, match="latent_source"):
        _monitor(vae, latent_source="batch")
    with pytest.raises(KeyError, match="available: \\['loss'\\]"):
        _monitor(vae).observe(outputs={"loss": torch.tensor(1.0)})


def test_half_precision_vae_and_hook_point():
    vae = _vae().to(torch.bfloat16)
    encode, decode = vae_callables(vae)
    x = _batches(1)[0]
    z = encode(x).mean
    assert z.dtype == torch.bfloat16 and decode(z).dtype == torch.float32
    monitor = _monitor(vae)
    monitor.observe(latents=z)
    assert np.isfinite(monitor.evaluate()["ifid"])
    module, transform = latent_hook_point(_vae())
    assert isinstance(module, nn.Sequential)
    assert transform(torch.zeros(2, 8, 4, 4)).shape == (2, 4, 4, 4)


def test_diffusers_autoencoder_kl_with_nothing_else():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=[8, 16],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )
    monitor = _monitor(vae, latent_source="hook")  # hooks vae.quant_conv automatically
    monitor.attach()
    x = _batches(1)[0]
    vae.train()
    expected = vae.encode(x).latent_dist.mean.detach()
    monitor.observe()
    assert torch.allclose(monitor.bank.vectors, expected.reshape(8, -1), atol=1e-6)
    result = monitor.evaluate()
    assert np.isfinite(result["ifid"]) and np.isfinite(result["rfid"])
