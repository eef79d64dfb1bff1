"""The columns of the monitor's image grid: x | NN(x) | interpolant | reconstruction."""

from __future__ import annotations

import torch
from torch import Tensor

from ifid_callback.functional.interpolation import interpolate
from ifid_callback.metric import InterpolatedFID

__all__ = ["grid_columns"]


def grid_columns(metric: InterpolatedFID, x: Tensor, seed: int) -> list[Tensor]:
    """``[x, D(NN(E(x))), D(interp), D(E(x))]`` for images ``x`` with the metric's VAE and index.

    Call under no_grad with the VAE in eval mode; ``seed`` fixes the random choices (top-k pick,
    mask positions, posterior sample) so the grid is reproducible.
    """
    rows = x.shape[0]
    gen = torch.Generator().manual_seed(seed + 2)
    z = metric._encode(x)
    z_nn, _ = metric.neighbors(z, generator=gen)
    z_hat = interpolate(z, z_nn, metric.interpolation, metric.alpha, gen)
    decoded = metric._decode(torch.cat([z_nn, z_hat, z]))
    nn_x, interp, recon = decoded.split(rows)
    return [x, nn_x, interp, recon]
