"""The probe's training objective (flow matching on the linear interpolant) and its EMA schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ema_decay_at", "ema_update", "flow_matching_loss"]


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """EMA decay used after optimiser step ``step`` (0-based): ``min(decay, (1+step)/(10+step))``
    with warm-up, else ``decay``."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


def flow_matching_loss(
    model: nn.Module, x: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None
) -> Tensor:
    """Mean squared velocity error on the linear interpolant.

    ``x_t = (1 - t) x + t noise`` and target ``v = noise - x``, with ``x``/``noise`` ``(B, C, H, W)``
    and ``t`` ``(B,)`` in ``[0, 1]``. Returns a scalar tensor.
    """
    tb = t.view(-1, 1, 1, 1).to(x.dtype)
    x_t = (1 - tb) * x + tb * noise
    return F.mse_loss(model(x_t, t, y), noise - x)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)
