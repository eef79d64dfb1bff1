import math

import pytest
import torch

from ifid_callback.functional.interpolation import interpolate


@pytest.mark.parametrize("method", ["linear", "slerp", "mask"])
def test_endpoints(method):
    g = torch.Generator().manual_seed(0)
    z, n = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    torch.testing.assert_close(interpolate(z, n, method, 0.0), z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(interpolate(z, n, method, 1.0), n, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["linear", "slerp", "mask"])
def test_shape_and_dtype_kept(method, dtype):
    z, n = torch.randn(3, 2, 4, 4).to(dtype), torch.randn(3, 2, 4, 4).to(dtype)
    out = interpolate(z, n, method, 0.3, generator=torch.Generator().manual_seed(1))
    assert out.shape == z.shape and out.dtype == dtype


def test_linear_matches_formula():
    z, n = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(interpolate(z, n, "linear", 0.25), 0.75 * z + 0.25 * n)


def test_slerp_orthogonal_unit_vectors_stay_on_circle():
    z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    n = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    for a in (0.25, 0.5, 0.8):
        out = interpolate(z, n, "slerp", a)
        expected = torch.tensor(
            [[math.cos(a * math.pi / 2), math.sin(a * math.pi / 2)]], dtype=torch.float64
        )
        torch.testing.assert_close(out, expected)


def test_slerp_weights_apply_to_unnormalised_vectors():
    # Same directions as the orthogonal case, but lengths 2 and 3: weights from the angle only.
    z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    n = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
    w = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    torch.testing.assert_close(
        interpolate(z, n, "slerp", 0.5), torch.tensor([[2.0 * w, 3.0 * w]], dtype=torch.float64)
    )


def test_slerp_parallel_and_opposite_fall_back_to_linear():
    z = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    n = torch.tensor([[2.0, 4.0, 6.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    out = interpolate(z, n, "slerp", 0.3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.7 * z + 0.3 * n)


def test_slerp_is_per_sample_on_flattened_latents():
    z, n = (
        torch.randn(3, 2, 2, 2, dtype=torch.float64),
        torch.randn(3, 2, 2, 2, dtype=torch.float64),
    )
    out = interpolate(z, n, "slerp", 0.4)
    for i in range(3):
        single = interpolate(z[i : i + 1].reshape(1, -1), n[i : i + 1].reshape(1, -1), "slerp", 0.4)
        torch.testing.assert_close(out[i].reshape(1, -1), single)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_mask_takes_exact_fraction_of_positions_for_all_channels(alpha):
    z = torch.zeros(6, 3, 4, 4)
    n = torch.ones(6, 3, 4, 4)
    out = interpolate(z, n, "mask", alpha, generator=torch.Generator().manual_seed(0))
    taken = out[:, 0]
    assert torch.equal(
        taken.sum(dim=(1, 2)), torch.full((6,), round(alpha * 16), dtype=taken.dtype)
    )
    # A position is taken for every channel or none.
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_mask_is_seeded():
    z, n = torch.zeros(4, 2, 8, 8), torch.ones(4, 2, 8, 8)
    a = interpolate(z, n, "mask", 0.5, generator=torch.Generator().manual_seed(3))
    b = interpolate(z, n, "mask", 0.5, generator=torch.Generator().manual_seed(3))
    c = interpolate(z, n, "mask", 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_errors():
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        interpolate(z, z, "cubic")
    with pytest.raises(ValueError, match="alpha"):
        interpolate(z, z, "linear", 1.5)
    with pytest.raises(ValueError, match="same shape"):
        interpolate(z, torch.randn(2, 5))
    with pytest.raises(ValueError, match="dtype and device"):
        interpolate(z, z.double())
