"""The reference-scale check compares per-channel mean and std of the queries (accumulated over
batches) with the indexed rows': it warns on every realistic affine mismatch of a stored bank and
never on a correct one, whatever the first batch looks like."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from ifid_callback.bank import LatentBank
from ifid_callback.reference import Reference
from ifid_callback.scale_check import MIN_QUERY_ROWS

# (scale, shift) of the latents a diffusion model consumes: bank = (z - shift) * scale.
AFFINE = {
    "sd": (0.18215, 0.0),
    "sdxl": (0.13025, 0.0),
    "sd3": (1.5305, 0.0609),
    "flux": (0.3611, 0.1159),
    "x1.9": (1.9, 0.0),
}


def _latents(n: int, kind: str, seed: int, contrast: float | None = None) -> torch.Tensor:
    """Latents of n images (n, C, 8, 8) of a given family: smooth per-channel maps around channel
    means, each image with its own contrast and brightness (as photos vary)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "sd":  # raw SD-VAE-like: 4 channels, std ~ 1 / 0.18215, uneven channel means
        mean = torch.tensor([2.5, -1.0, 0.8, -2.0])
        std = torch.tensor([6.0, 4.5, 5.0, 4.0])
    elif kind == "flux":  # 16 channels around FLUX's shift, std ~ 1 / 0.3611
        mean = 0.1159 + 0.3 * torch.randn(16, generator=torch.Generator().manual_seed(7))
        std = 2.8 * (0.7 + 0.6 * torch.rand(16, generator=torch.Generator().manual_seed(8)))
    else:  # "unit": a KL-VAE trained to a unit prior, 8 channels
        mean = torch.zeros(8)
        std = torch.ones(8)
    c = mean.shape[0]
    low = torch.randn(n, c, 4, 4, generator=g)
    maps = F.interpolate(low, size=8, mode="bilinear", align_corners=False) * 1.4
    maps = maps + 0.3 * torch.randn(n, c, 8, 8, generator=g)
    per_image = torch.exp(0.3 * torch.randn(n, 1, 1, 1, generator=g))
    if contrast is not None:
        per_image = torch.full_like(per_image, contrast)
    brightness = 0.3 * torch.randn(n, c, 1, 1, generator=g)
    return mean[None, :, None, None] + std[None, :, None, None] * (per_image * maps + brightness)


def _reference(bank: torch.Tensor) -> Reference:
    ref = Reference("exact", "cosine", 0, None, True)
    ref.refresh(bank)
    return ref


def _warns(ref: Reference, queries: torch.Tensor, batch: int = 8, posterior: bool = False) -> int:
    """How many of the batches of ``queries`` warned."""
    count = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in queries.split(batch):
            count += ref.warn_if_scale_differs(part, posterior)
    assert count == len([w for w in caught if "another scale" in str(w.message)])
    return count


def _queries(kind: str, seed: int) -> torch.Tensor:
    """A low-contrast first image, then images of the family: 96 latents."""
    first = _latents(1, kind, seed, contrast=0.15)
    return torch.cat([first, _latents(95, kind, seed + 1)])


@pytest.mark.parametrize("kind", ["sd", "flux", "unit"])
def test_a_correct_bank_never_warns(kind):
    for seed in range(6):
        ref = _reference(_latents(512, kind, 100 + seed))
        assert _warns(ref, _queries(kind, 10 * seed)) == 0, seed
        # Other image content: lower contrast overall, and batches of one.
        dull = _latents(MIN_QUERY_ROWS, kind, 50 + seed) * 0.9
        assert _warns(_reference(_latents(512, kind, seed)), dull, batch=1) == 0


@pytest.mark.parametrize("kind", ["sd", "flux", "unit"])
@pytest.mark.parametrize("name", list(AFFINE))
@pytest.mark.parametrize("direction", ["bank-transformed", "queries-transformed"])
def test_every_realistic_affine_mismatch_warns_once(kind, name, direction):
    scale, shift = AFFINE[name]
    bank = _latents(512, kind, 3)
    queries = _queries(kind, 40)
    if direction == "bank-transformed":
        bank = (bank - shift) * scale
    else:  # a bank of raw latents, an encoder that returns the transformed ones
        queries = (queries - shift) * scale
    ref = _reference(bank)
    found = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in queries.split(8):
            found.append(ref.warn_if_scale_differs(part, False))
    # Decided exactly when 64 latents were seen, once.
    assert found == [False] * 7 + [True] + [False] * 4
    (message,) = [str(w.message) for w in caught]
    assert "scaling_factor" in message and "shift_factor" in message


def test_the_decision_waits_for_enough_rows_and_a_refresh_starts_over():
    bank = _latents(256, "sd", 1) * 1.9
    ref = _reference(bank)
    assert _warns(ref, _latents(MIN_QUERY_ROWS - 1, "sd", 2)) == 0  # not decided yet
    assert _warns(ref, _latents(1, "sd", 3)) == 1
    assert _warns(ref, _latents(64, "sd", 4)) == 0  # decided: no work, no second warning
    ref.refresh(bank)
    assert ref.scale_check is not None and ref.scale_check.rows == 0
    assert _warns(ref, _latents(64, "sd", 4)) == 1


def test_a_bank_object_is_checked_on_a_spread_sample_of_its_rows():
    bank = LatentBank(capacity=300)
    bank.add(_latents(300, "flux", 5) * 0.3611)
    ref = Reference("exact", "cosine", 0, None, True)
    ref.bank = bank
    ref.refresh()
    assert _warns(ref, _latents(64, "flux", 6)) == 1
    good = LatentBank(capacity=300)
    good.add(_latents(300, "flux", 5))
    ref.bank = good
    ref.refresh()
    assert _warns(ref, _latents(64, "flux", 6)) == 0


def test_posterior_samples_of_a_narrow_posterior_against_means_do_not_warn():
    # A trained VAE: posterior std a tenth of the latents' spread. Samples vs means: no warning;
    # samples vs samples, means vs means neither.
    g = torch.Generator().manual_seed(0)
    means, queries = _latents(512, "unit", 1), _latents(96, "unit", 2)

    def sample(z):
        return z + 0.1 * torch.randn(z.shape, generator=g)

    assert _warns(_reference(means), sample(queries), posterior=True) == 0
    assert _warns(_reference(sample(means)), sample(queries), posterior=True) == 0
    assert _warns(_reference(means), queries) == 0
    # A wide posterior (std 1.5 of the spread) mixed with means warns, saying so.
    ref = _reference(means)
    with pytest.warns(UserWarning, match="posterior samples"):
        ref.warn_if_scale_differs(queries + 1.5 * torch.randn(queries.shape, generator=g), True)


def test_a_batch_that_fails_teaches_the_check_nothing():
    from ifid_callback import InterpolatedFID
    from tests.helpers import RandomFeatures, decode, encode, smooth_images

    calls = {"fail": True}

    def flaky_decode(z):
        if calls["fail"]:
            raise RuntimeError("decoder out of memory")
        return decode(z)

    bank = LatentBank(capacity=32)
    bank.add(encode(smooth_images(32, seed=2)))
    metric = InterpolatedFID(
        encoder=encode, decoder=flaky_decode, bank=bank, feature=RandomFeatures(3 * 8 * 8)
    )
    queries = smooth_images(8, seed=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        metric.update(queries)
    assert metric.reference.scale_check.rows == 0
    calls["fail"] = False
    metric.update(queries)
    assert metric.reference.scale_check.rows == 8
