"""Half-precision VAEs run in InterpolatedFID.update(): images are cast in, latents, decodes and
features stay float32."""

import copy

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.tiny_vae import TinyVAE
from ifid_callback.vae import VAEAdapter
from tests.helpers import RandomFeatures, smooth_images

SIZE = 16


def tiny_vae(dtype):
    torch.manual_seed(0)
    vae = TinyVAE(base_channels=8, latent_channels=4).eval()
    return vae.to(dtype)


def run(vae, sample_posterior=False):
    queries = smooth_images(12, size=SIZE, seed=1)
    bank = LatentBank(capacity=24)
    with torch.no_grad():
        bank.add(VAEAdapter(vae).encode(smooth_images(24, size=SIZE, seed=2)).float())
    metric = InterpolatedFID(
        vae=vae,
        feature=RandomFeatures(3 * SIZE * SIZE),
        bank=bank,
        sample_posterior=sample_posterior,
    )
    metric.update(queries)
    return {key: float(value) for key, value in metric.compute().items()}, metric


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_vae_runs_and_agrees_with_float32(dtype):
    reference, _ = run(tiny_vae(torch.float32))
    half = tiny_vae(dtype)
    try:
        half(torch.zeros(1, 3, SIZE, SIZE, dtype=dtype))
    except RuntimeError as exc:  # this CPU build has no kernels for the dtype
        pytest.skip(f"{dtype} convolutions unavailable here: {exc}")
    values, metric = run(half)  # failed before: "Input type (float) and bias type ... differ"
    assert metric.real_features_sum.dtype == torch.float64
    for key in ("ifid", "rfid"):
        assert values[key] == pytest.approx(reference[key], rel=0.05, abs=0.02)
    # Latents and decodes come back as float32, whatever the VAE computes in.
    adapter = VAEAdapter(half)
    z = adapter.encode(smooth_images(2, size=SIZE, seed=3))
    assert z.dtype == torch.float32
    assert adapter.decode(z).dtype == torch.float32


def test_half_precision_posterior_samples_are_float32():
    half = tiny_vae(torch.bfloat16)
    values, _ = run(half, sample_posterior=True)
    assert all(v == v for v in values.values())


def test_a_half_precision_callable_it_cannot_see_gets_a_clear_error():
    half = tiny_vae(torch.bfloat16)
    hidden = copy.deepcopy(half)

    def encode(x):  # a plain function: the adapter cannot see the module's dtype
        return hidden.encode(x).mean

    metric = InterpolatedFID(
        encoder=encode,
        decoder=lambda z: hidden.decode(z),
        feature=RandomFeatures(3 * SIZE * SIZE),
        bank=None,
    )
    with pytest.raises(TypeError, match=r"bfloat16|BFloat16.*vae=|dtype"):
        metric.update(smooth_images(4, size=SIZE, seed=4))
    assert int(metric.real_num_samples) == 0
