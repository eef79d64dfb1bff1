"""A trained probe: its EMA SiT and recipe, sampling, gFID(t) regeneration, and its ``.pt`` file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .checkpoints import CKPT_FORMAT, PROBE_FORMAT, atomic_save
from .probe_config import ProbeTrainConfig, resolve_time_shift
from .sampling import sample as _sample
from .sit import LatentNormalizer, SiT, SiTConfig

__all__ = ["TrainedProbe"]


class TrainedProbe:
    """A trained probe: the EMA model (with its fitted latent normaliser) and its recipe.

    Attributes:
        model: the EMA :class:`~ifid_callback.probes.sit.SiT`, in eval mode, no gradients.
        config: the :class:`ProbeTrainConfig` it was trained with.
        step: optimiser steps taken.
        loss_history: ``(step, mean loss)`` pairs, one per ``log_every`` steps (the mean over the
            steps since the previous pair), plus a last pair for a final partial interval.
    """

    def __init__(
        self,
        model: SiT,
        config: ProbeTrainConfig,
        step: int,
        loss_history: Sequence[tuple[int, float]] = (),
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.step = int(step)
        self.loss_history = [(int(s), float(v)) for s, v in loss_history]

    @property
    def normalizer(self) -> LatentNormalizer:
        return self.model.normalizer

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latents the probe models."""
        return self.model.latent_shape

    @property
    def time_shift(self) -> float | None:
        """The resolved time shift ``s`` used in training (None: uniform times)."""
        return resolve_time_shift(self.config.time_shift, self.latent_shape)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TrainedProbe:
        self.model.to(device)
        return self

    def sample(
        self,
        n: int,
        *,
        labels: Tensor | None = None,
        sampler: str = "euler",
        steps: int = 50,
        cfg_scale: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        t_start: float = 1.0,
        x_start: Tensor | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Draw ``n`` latents, de-normalised to the VAE's latent space; float32 ``(n, C, H, W)`` on
        the CPU.

        Arguments as in :func:`~ifid_callback.probes.sampling.sample` (the training time shift
        is applied to the grid); ``x_start`` is in the probe's normalised space (see
        :meth:`regenerate` for starting from clean latents). Batches of ``batch_size`` (default:
        all ``n``) are drawn in order from ``generator``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if x_start is not None and x_start.shape[0] != n:
            raise ValueError(f"x_start must hold n={n} latents, got {tuple(x_start.shape)}")
        bs = n if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        from tqdm.auto import tqdm

        shift = self.time_shift
        out = []
        for start in tqdm(range(0, n, bs), desc="sample", disable=not progress, leave=False):
            stop = min(start + bs, n)
            z = _sample(
                self.model,
                (stop - start, *self.latent_shape),
                sampler=sampler,
                steps=steps,
                cfg_scale=cfg_scale,
                cfg_interval=cfg_interval,
                labels=None if labels is None else labels[start:stop],
                time_shift=shift,
                generator=generator,
                t_start=t_start,
                x_start=None if x_start is None else x_start[start:stop],
            )
            out.append(self.normalizer.denormalize(z).cpu())
        return torch.cat(out)

    def regenerate(
        self,
        latents: Tensor,
        t: float,
        *,
        labels: Tensor | None = None,
        sampler: str = "euler",
        steps: int = 50,
        cfg_scale: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """gFID(t) protocol: noise clean latents to time ``t`` and integrate back to 0.

        ``latents`` ``(n, C, H, W)`` in the VAE's space are normalised, mixed with fresh noise as
        ``(1 - t) z + t eps`` (noise from ``generator``), integrated from ``t`` to 0 over ``steps``
        intervals and de-normalised. ``t = 1`` is plain sampling; small ``t`` returns nearly the
        input. Returns float32 ``(n, C, H, W)`` on the CPU.
        """
        if not 0.0 < t <= 1.0:
            raise ValueError(f"t must be in (0, 1], got {t!r}")
        if tuple(latents.shape[1:]) != self.latent_shape or latents.ndim != 4:
            raise ValueError(
                f"latents must be (n, {self.latent_shape}), got {tuple(latents.shape)}"
            )
        z = self.normalizer.normalize(latents.to(self.device, torch.float32))
        noise_device = generator.device if generator is not None else self.device
        eps = torch.randn(z.shape, generator=generator, device=noise_device).to(self.device)
        z_t = (1 - t) * z + t * eps
        return self.sample(
            latents.shape[0],
            labels=labels,
            sampler=sampler,
            steps=steps,
            cfg_scale=cfg_scale,
            cfg_interval=cfg_interval,
            generator=generator,
            t_start=float(t),
            x_start=z_t,
            batch_size=batch_size,
            progress=progress,
        )

    def save(self, path: str | Path) -> Path:
        """Write the probe (EMA weights, normaliser, configs, step, losses) to one ``.pt`` file."""
        path = Path(path)
        payload = {
            "format": PROBE_FORMAT,
            "version": 1,
            "config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "step": self.step,
            "loss_history": [[s, v] for s, v in self.loss_history],
        }
        atomic_save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TrainedProbe:
        """Inverse of :meth:`save`; also accepts a training checkpoint (uses its EMA weights)."""
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
        fmt = payload.get("format") if isinstance(payload, dict) else None
        if fmt not in (PROBE_FORMAT, CKPT_FORMAT):
            raise ValueError(f"{path} is not a saved probe or probe checkpoint (format {fmt!r})")
        model = SiT(SiTConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["model" if fmt == PROBE_FORMAT else "ema"])
        model.to(map_location)
        return cls(
            model,
            ProbeTrainConfig.from_dict(payload["config"]),
            payload["step"],
            payload.get("loss_history", ()),
        )
