"""The monitor's image grid: x | NN(x) | interpolant | reconstruction, and its columns."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ifid_callback.functional.interpolation import interpolate
from ifid_callback.grid import COLUMN_TITLES, image_grid
from ifid_callback.metric import InterpolatedFID

__all__ = ["grid_columns", "monitor_grid"]


def monitor_grid(monitor: Any, num_rows: int, labels: bool) -> Tensor:
    """``IFIDMonitor.render_grid``: the grid of the first ``num_rows`` evaluation images with
    the evaluated weights and the current index (built if missing)."""
    rows = min(num_rows, monitor.num_eval_images)
    adapter = monitor._adapter("")
    monitor.index.prepare_grid(adapter)
    device = monitor.placement.place()
    x = monitor.eval_set.first(rows).to(device, torch.float32)
    with monitor.evaluator.using(adapter):
        columns = grid_columns(monitor.metric, x)
    titles = COLUMN_TITLES if labels else None
    return image_grid(columns, monitor.input_range, titles=titles)


def grid_columns(metric: InterpolatedFID, x: Tensor) -> list[Tensor]:
    """``[x, D(NN(E(x))), D(interp), D(E(x))]`` for the first evaluation images ``x``, with the
    metric's VAE and index.

    Call under no_grad with the VAE in eval mode. The random choices (top-k pick, mask
    positions, posterior sample) are those the evaluation makes for these images (keyed by their
    positions 0..rows-1), so the grid shows what was measured.
    """
    rows = x.shape[0]
    positions = torch.arange(rows)
    z = metric._encode(x, positions)
    z_nn, _ = metric.neighbors(z, generator=metric._generators(positions, "pick"))
    mask = metric._generators(positions, "mask")
    z_hat = interpolate(z, z_nn, metric.interpolation, metric.alpha, mask)
    decoded = metric._decode(torch.cat([z_nn, z_hat, z]))
    nn_x, interp, recon = decoded.split(rows)
    return [x, nn_x, interp, recon]
