"""The separable SSIM equals torchmetrics' SSIM (default window) image by image."""

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ifid_callback.functional.reconstruction import ssim_per_image


@pytest.mark.parametrize(
    "shape, dtype, data_range",
    [
        ((4, 3, 32, 32), torch.float32, 2.0),
        ((3, 1, 6, 6), torch.float32, 2.0),  # the smallest images the window allows
        ((2, 3, 17, 40), torch.float64, 1.0),  # non-square, odd
        ((2, 4, 64, 48), torch.float32, 255.0),
    ],
)
def test_equals_torchmetrics(shape, dtype, data_range):
    g = torch.Generator().manual_seed(sum(shape))
    target = torch.rand(shape, generator=g, dtype=dtype) * data_range
    preds = (target + 0.1 * data_range * torch.randn(shape, generator=g, dtype=dtype)).clamp(
        0, data_range
    )
    ours = ssim_per_image(preds, target, data_range)
    ref = structural_similarity_index_measure(
        preds, target, data_range=data_range, reduction="none"
    )
    assert ours.dtype == dtype and ours.shape == (shape[0],)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert torch.allclose(ours, ref, rtol=0, atol=tol)
    assert torch.allclose(
        ssim_per_image(target, target, data_range), torch.ones(shape[0], dtype=dtype)
    )
