"""The recipe of one probe run: :class:`ProbeTrainConfig` and the time shift it resolves to."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProbeTrainConfig", "resolve_time_shift"]


@dataclass
class ProbeTrainConfig:
    """Recipe of one probe run (defaults follow the iFID paper's SiT recipe where it has one).

    Args:
        size: named SiT size, a key of :data:`~ifid_callback.probes.sit.SIT_SIZES`.
        patch_size: 1, 2 or 4; must divide the latent's spatial size.
        num_classes: class count for a conditional probe; None infers ``labels.max() + 1`` when
            labels are given and 0 (unconditional) otherwise.
        class_dropout_prob: probability of replacing a label by the null class (for CFG).
        model_overrides: extra :class:`~ifid_callback.probes.sit.SiTConfig` fields
            (``{"depth": 2, "hidden_size": 64}``).
        steps: optimiser steps in total (a resumed run continues up to this count).
        batch_size: latents per step; batches walk a fresh seeded permutation every epoch.
        lr, weight_decay, betas: AdamW settings (paper: lr 1e-4, weight decay 0).
        grad_clip: max global gradient norm; None disables clipping.
        ema_decay: EMA decay of the returned weights (paper: 0.9999).
        ema_warmup: use ``min(ema_decay, (1 + step) / (10 + step))`` so short runs are not
            dominated by the random initial weights (0.9999 has a half-life of ~6.9K steps).
        time_shift: ``"auto"`` for ``s = sqrt(C*H*W / 4096)`` (1 for 32x32x4 latents, < 1 for
            smaller ones), a float ``s > 0``, or None for uniform ``t``. Training times are
            ``t' = s t / (1 + (s - 1) t)`` with ``t ~ U(0, 1)``; samplers reuse the shift.
        seed: seeds initialisation, batch order, noise, times and label dropout.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_checkpoints: how many of the newest checkpoints to keep on disk.
        log_every: steps between TensorBoard/progress-bar loss updates.
        device: torch device to train on.
    """

    size: str = "tiny"
    patch_size: int = 2
    num_classes: int | None = None
    class_dropout_prob: float = 0.1
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    time_shift: float | str | None = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProbeTrainConfig.{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if isinstance(self.time_shift, str):
            if self.time_shift != "auto":
                raise ValueError(
                    f"time_shift must be 'auto', a float > 0 or None, got {self.time_shift!r}"
                )
        elif self.time_shift is not None and not float(self.time_shift) > 0:
            raise ValueError(
                f"time_shift must be 'auto', a float > 0 or None, got {self.time_shift!r}"
            )
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 0
        ):
            raise ValueError(f"num_classes must be None or an int >= 0, got {self.num_classes!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; :meth:`from_dict` inverts it."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown ProbeTrainConfig fields {sorted(unknown)}; known: {sorted(known)}"
            )
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


def resolve_time_shift(time_shift: float | str | None, latent_shape: Sequence[int]) -> float | None:
    """The shift ``s`` for latents of shape ``(C, H, W)``: ``"auto"`` gives ``sqrt(C*H*W / 4096)``."""
    if time_shift is None:
        return None
    if time_shift == "auto":
        return math.sqrt(math.prod(int(d) for d in latent_shape) / 4096.0)
    return float(time_shift)
