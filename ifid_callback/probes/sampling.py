"""Samplers for velocity models on the linear interpolant, batch decoding and PNG image grids.

Convention: ``x_t = (1 - t) * x_0 + t * eps``, ``t = 1`` is noise, the model predicts
``v(x_t, t) = E[eps - x_0 | x_t]``; sampling integrates from ``t_start`` (1 by default) down to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "SAMPLERS",
    "decode_in_batches",
    "inverse_time_shift",
    "sample",
    "save_image_grid",
    "time_grid",
    "time_shift",
]

SAMPLERS = ("euler", "heun", "sde")


def time_shift(t: Tensor, shift: float | None) -> Tensor:
    """Resolution time shift ``t' = s t / (1 + (s - 1) t)``; identity when ``shift`` is None or 1.

    Maps 0 to 0 and 1 to 1 and is increasing for ``s > 0``; ``s > 1`` moves times toward noise.
    """
    if shift is None or shift == 1.0:
        return t
    if not shift > 0:
        raise ValueError(f"time shift must be > 0, got {shift!r}")
    return shift * t / (1 + (shift - 1) * t)


def inverse_time_shift(t: Tensor, shift: float | None) -> Tensor:
    """Inverse of :func:`time_shift`: ``t = t' / (s - (s - 1) t')``."""
    if shift is None or shift == 1.0:
        return t
    if not shift > 0:
        raise ValueError(f"time shift must be > 0, got {shift!r}")
    return t / (shift - (shift - 1) * t)


def time_grid(steps: int, t_start: float = 1.0, shift: float | None = None) -> Tensor:
    """Decreasing float64 grid of ``steps + 1`` times from ``t_start`` to exactly 0.

    Uniform in the un-shifted time, then mapped through :func:`time_shift`, so a model trained
    with a shift is integrated on the same warped clock it was trained on.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start!r}")
    u_start = inverse_time_shift(torch.tensor(t_start, dtype=torch.float64), shift)
    grid = time_shift(torch.linspace(float(u_start), 0.0, steps + 1, dtype=torch.float64), shift)
    grid[0], grid[-1] = t_start, 0.0
    return grid


def _velocity_fn(
    model: nn.Module,
    labels: Tensor | None,
    cfg_scale: float,
    cfg_interval: tuple[float, float] | None,
) -> Callable[[Tensor, float], Tensor]:
    def velocity(x: Tensor, t: float) -> Tensor:
        guided = cfg_scale != 1.0 and (
            cfg_interval is None or cfg_interval[0] <= t <= cfg_interval[1]
        )
        if guided:
            return model.forward_with_cfg(x, t, labels, cfg_scale)
        return model(x, t, labels)

    return velocity


@torch.no_grad()
def sample(
    model: nn.Module,
    shape: int | Sequence[int],
    *,
    sampler: str = "euler",
    steps: int = 50,
    cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] | None = None,
    labels: Tensor | None = None,
    time_shift: float | None = None,
    generator: torch.Generator | None = None,
    t_start: float = 1.0,
    x_start: Tensor | None = None,
) -> Tensor:
    """Integrate a velocity model from ``t_start`` (1 = noise) to ``t = 0`` (data).

    Samplers (``steps`` intervals on :func:`time_grid`):

    - ``"euler"``: ``x <- x + (t_next - t) v(x, t)``; ``steps`` model calls.
    - ``"heun"``: Euler predictor plus trapezoidal corrector on every interval; ``2 * steps`` calls.
    - ``"sde"``: Euler–Maruyama on the reverse SDE below, the last interval a noise-free mean
      step; ``steps`` calls.

    SDE derivation for ``x_t = (1 - t) x_0 + t eps``. With ``eps_hat = E[eps | x_t]`` and
    ``x_0 = (x_t - t eps) / (1 - t)``, the velocity is ``v = eps_hat - E[x_0 | x_t] =
    (eps_hat - x_t) / (1 - t)``, so ``eps_hat = x_t + (1 - t) v`` and the score is
    ``s = grad log p_t(x_t) = -eps_hat / t = -(x_t + (1 - t) v) / t``. For any diffusion ``g(t)``
    the SDE ``dx = [v - g^2/2 s] dt + g dW``, run backward in time, has the same marginals as the
    ODE ``dx = v dt`` (the extra drift and noise cancel in the Fokker–Planck equation). We take
    ``g^2 = 2 t``; the drift becomes ``v - t s = x_t + (2 - t) v`` (no ``1/t`` singularity) and
    a step of size ``dt = t_next - t < 0`` is ``x <- x + dt (x + (2 - t) v) + sqrt(2 t |dt|) z``.

    Args:
        model: maps ``(x (B, C, H, W), t float, y)`` to a velocity of the same shape (e.g.
            :class:`~ifid_callback.probes.sit.SiT`); needs ``forward_with_cfg`` when
            ``cfg_scale != 1``. Evaluated in its current device and mode (call ``.eval()``).
        shape: number of samples ``n`` (then the model must have a ``config`` with
            ``in_channels``/``input_size``) or a full shape ``(n, C, H, W)``.
        sampler: ``"euler"``, ``"heun"`` or ``"sde"``.
        steps: number of time intervals.
        cfg_scale: classifier-free guidance scale on all channels; 1 disables guidance.
        cfg_interval: ``(t_lo, t_hi)``: guide only while ``t_lo <= t <= t_hi``; None guides
            everywhere.
        labels: integer labels ``(n,)`` for a conditional model; None samples the null class
            (needs ``cfg_scale == 1``).
        time_shift: the shift ``s`` the model was trained with (None or 1: no shift).
        generator: source of the initial noise and SDE noise; noise is drawn on the generator's
            device, then moved to the model's, so a CPU generator gives device-independent noise.
        t_start: time in ``(0, 1]`` to start from (below 1 for gFID(t): a partially noised latent).
        x_start: the state at ``t_start`` ``(n, C, H, W)`` in the model's (normalised) space;
            required when ``t_start < 1``, else fresh ``N(0, I)`` noise is drawn.

    Returns:
        float32 samples ``(n, C, H, W)`` in the model's space, on the model's device.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if cfg_interval is not None:
        lo, hi = cfg_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(
                f"cfg_interval must satisfy 0 <= t_lo <= t_hi <= 1, got {cfg_interval!r}"
            )
        cfg_interval = (float(lo), float(hi))
    if cfg_scale != 1.0 and labels is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs labels")
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")

    if isinstance(shape, int):
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError("pass a full shape (n, C, H, W): the model has no config")
        shape = (shape, config.in_channels, config.input_size, config.input_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[0] < 1:
        raise ValueError(f"shape must be n or (n, C, H, W) with n >= 1, got {shape!r}")
    if labels is not None:
        if labels.shape != (shape[0],):
            raise ValueError(f"labels must have shape ({shape[0]},), got {tuple(labels.shape)}")
        labels = labels.to(device)

    grid = time_grid(steps, t_start, time_shift).tolist()
    noise_device = generator.device if generator is not None else device

    def noise() -> Tensor:
        return torch.randn(shape, generator=generator, device=noise_device).to(device)

    if x_start is not None:
        if tuple(x_start.shape) != shape:
            raise ValueError(f"x_start must have shape {shape}, got {tuple(x_start.shape)}")
        if not torch.isfinite(x_start).all():
            raise ValueError("x_start contains NaN or Inf")
        x = x_start.to(device=device, dtype=torch.float32).clone()
    elif t_start < 1.0:
        raise ValueError("t_start < 1 needs x_start: the partially noised latent to start from")
    else:
        x = noise()

    velocity = _velocity_fn(model, labels, cfg_scale, cfg_interval)
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        dt = t_next - t
        v = velocity(x, t).float()
        if sampler == "euler":
            x = x + dt * v
        elif sampler == "heun":
            x_pred = x + dt * v
            v_next = velocity(x_pred, t_next).float()
            x = x + dt * 0.5 * (v + v_next)
        else:
            x = x + dt * (x + (2.0 - t) * v)
            if i < steps - 1:  # the last interval is the mean step
                x = x + (2.0 * t * abs(dt)) ** 0.5 * noise()
    if not torch.isfinite(x).all():
        raise FloatingPointError("sampling produced NaN or Inf; check the model and the time grid")
    return x


@torch.no_grad()
def decode_in_batches(
    decode_fn: Callable[[Tensor], Tensor],
    latents: Tensor,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Decode latents ``(N, C, h, w)`` in chunks of ``batch_size``; returns images on the CPU.

    Each chunk is moved to ``device`` (when given) before ``decode_fn``; outputs are concatenated
    in order, as float32. Raises ``ValueError`` if the decoder returns NaN or Inf.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if latents.shape[0] == 0:
        raise ValueError("no latents to decode")
    from tqdm.auto import tqdm

    outputs = []
    starts = range(0, latents.shape[0], batch_size)
    for start in tqdm(starts, desc="decode", disable=not progress, leave=False):
        chunk = latents[start : start + batch_size]
        if device is not None:
            chunk = chunk.to(device)
        images = decode_fn(chunk)
        if not isinstance(images, Tensor):
            raise TypeError(f"decode_fn must return a Tensor, got {type(images).__name__}")
        if not torch.isfinite(images).all():
            raise ValueError(
                f"decode_fn returned NaN or Inf for latents {start}..{start + len(chunk) - 1}"
            )
        outputs.append(images.detach().float().cpu())
    return torch.cat(outputs)


def save_image_grid(
    images: Tensor,
    path: str | Path,
    nrow: int = 8,
    *,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Path:
    """Write images ``(N, C, H, W)`` (C = 1 or 3, values in ``value_range``) as one PNG grid.

    Values are clamped to ``value_range`` and quantised to 8 bits; ``nrow`` images per row,
    ``padding`` black pixels between them. Returns the path written.
    """
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be (N, 1 or 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or Inf")
    x = ((x.clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = (n + cols - 1) // cols
    grid = np.zeros(
        (rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding, c), dtype=np.uint8
    )
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = x[i].permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return path
