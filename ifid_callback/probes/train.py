"""Flow-matching training of SiT probes on cached latents: seeded, checkpointed and resumable."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sampling import sample as _sample
from .sampling import time_shift as _apply_time_shift
from .sit import LatentNormalizer, SiT, SiTConfig

__all__ = [
    "ProbeTrainConfig",
    "TrainedProbe",
    "ema_decay_at",
    "flow_matching_loss",
    "resolve_time_shift",
    "train_probe",
]

_CKPT_FORMAT = "ifid-probe-checkpoint"
_PROBE_FORMAT = "ifid-trained-probe"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
# Fields that may change between a run and its resumption without changing the trajectory.
_RESUME_FREE_FIELDS = {"steps", "checkpoint_every", "keep_checkpoints", "log_every"}


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
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)


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
            "format": _PROBE_FORMAT,
            "version": 1,
            "config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "step": self.step,
            "loss_history": [[s, v] for s, v in self.loss_history],
        }
        _atomic_save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TrainedProbe:
        """Inverse of :meth:`save`; also accepts a training checkpoint (uses its EMA weights)."""
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
        fmt = payload.get("format") if isinstance(payload, dict) else None
        if fmt not in (_PROBE_FORMAT, _CKPT_FORMAT):
            raise ValueError(f"{path} is not a saved probe or probe checkpoint (format {fmt!r})")
        model = SiT(SiTConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["model" if fmt == _PROBE_FORMAT else "ema"])
        model.to(map_location)
        return cls(
            model,
            ProbeTrainConfig.from_dict(payload["config"]),
            payload["step"],
            payload.get("loss_history", ()),
        )


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    # A per-(seed, epoch) generator makes the batch order a pure function of the step.
    sub_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(sub_seed))


class _BatchOrder:
    """Indices of the batch at any step: consecutive slices of per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = _epoch_permutation(self.n, self.seed, epoch)
        return self._cache[epoch]

    def __call__(self, step: int) -> Tensor:
        pos = step * self.batch_size
        parts, need = [], self.batch_size
        while need > 0:
            epoch, offset = divmod(pos, self.n)
            take = min(need, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + take])
            pos, need = pos + take, need - take
        return torch.cat(parts)


def _check_data(latents: Tensor, labels: Tensor | None, config: ProbeTrainConfig) -> int:
    if not isinstance(latents, Tensor):
        raise TypeError(
            f"latents must be a torch.Tensor (N, C, H, W), got {type(latents).__name__}"
        )
    if latents.ndim != 4 or latents.shape[0] < 1 or latents.shape[2] != latents.shape[3]:
        raise ValueError(
            f"latents must be (N, C, H, H) with N >= 1 (square), got {tuple(latents.shape)}"
        )
    if not latents.dtype.is_floating_point:
        raise TypeError(f"latents must be floating point, got {latents.dtype}")
    if labels is None:
        if config.num_classes:
            raise ValueError(
                f"num_classes={config.num_classes} needs labels; pass labels or num_classes=None/0"
            )
        return 0
    if (
        labels.shape != (latents.shape[0],)
        or labels.dtype.is_floating_point
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"labels must be integers of shape ({latents.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )
    lo, hi = int(labels.min()), int(labels.max())
    num_classes = hi + 1 if config.num_classes is None else config.num_classes
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{lo}, {hi}]; set num_classes"
        )
    return num_classes


def train_probe(
    latents: Tensor,
    labels: Tensor | None,
    config: ProbeTrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> TrainedProbe:
    """Train a SiT probe with flow matching on ``latents`` and return its EMA weights.

    Each step draws ``batch_size`` latents (seeded per-epoch permutation), normalises them with
    the per-channel statistics fitted on all of ``latents``, draws ``t ~ U(0, 1)`` (then time
    shifted), ``eps ~ N(0, I)`` and, for a conditional probe, replaces labels by the null class with
    probability ``class_dropout_prob``; it minimises :func:`flow_matching_loss` with AdamW, clips
    the gradient norm and updates the EMA (warm-up per :func:`ema_decay_at`).

    Args:
        latents: ``(N, C, H, H)`` float latents in the VAE's space (CPU or device; may be a
            memory-mapped array wrapped by ``torch.from_numpy``). Batches are moved to
            ``config.device``.
        labels: integer class labels ``(N,)``, or None for an unconditional probe.
        config: the recipe.
        out_dir: where to write ``checkpoints/step_XXXXXXXX.pt`` (every ``checkpoint_every``
            steps and at the end), ``probe.pt`` (the final :class:`TrainedProbe`) and a
            TensorBoard log under ``tb/`` (scalars ``train/loss``, ``train/lr``,
            ``train/ema_decay``). None trains in memory only.
        resume: continue from the newest checkpoint in ``out_dir`` if there is one. A resumed run
            ends with the same weights as an uninterrupted one (bit-exact on CPU). ``False``
            deletes the checkpoints already in ``out_dir`` and starts over.
        progress: show a tqdm progress bar.

    Returns:
        the :class:`TrainedProbe` after ``config.steps`` steps.
    """
    num_classes = _check_data(latents, labels, config)
    device = torch.device(config.device)
    n, c, h, _ = latents.shape
    model_config = SiTConfig.from_name(
        config.size,
        input_size=h,
        in_channels=c,
        patch_size=config.patch_size,
        num_classes=num_classes,
        class_dropout_prob=config.class_dropout_prob,
        **config.model_overrides,
    )
    shift = resolve_time_shift(config.time_shift, (c, h, h))

    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG left untouched
        torch.manual_seed(config.seed)
        model = SiT(model_config)
    model.normalizer.fit(latents)
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)
    step, history, run_sum, run_count = 0, [], 0.0, 0

    out_path = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out_path / "checkpoints" if out_path is not None else None
    existing = _list_checkpoints(ckpt_dir) if ckpt_dir is not None else []
    if not resume:
        for _, old in existing:  # a fresh run must not later resume from a stale checkpoint
            old.unlink()
    elif existing:
        state = torch.load(existing[-1][1], map_location=device, weights_only=True)
        _check_resumable(state, config, model_config, existing[-1][1])
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        step = int(state["step"])
        history = [(int(s), float(v)) for s, v in state["loss_history"]]
        run_sum, run_count = float(state["run_sum"]), int(state["run_count"])
    if step > config.steps:
        raise ValueError(
            f"the checkpoint in {ckpt_dir} is at step {step}, beyond steps={config.steps}; "
            "raise steps or use another out_dir"
        )

    def save_checkpoint() -> None:
        assert ckpt_dir is not None
        _atomic_save(
            {
                "format": _CKPT_FORMAT,
                "version": 1,
                "step": step,
                "config": config.to_dict(),
                "model_config": model_config.to_dict(),
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "loss_history": [[s, v] for s, v in history],
                "run_sum": run_sum,
                "run_count": run_count,
            },
            ckpt_dir / f"step_{step:08d}.pt",
        )
        for _, old in _list_checkpoints(ckpt_dir)[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)

    writer = None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / "config.json").write_text(
            json.dumps({"train": config.to_dict(), "model": model_config.to_dict()}, indent=2)
        )
        writer = _summary_writer(out_path / "tb", step)
    order = _BatchOrder(n, config.batch_size, config.seed)
    null = model_config.num_classes
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=step, desc="probe", disable=not progress)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    model.train()
    try:
        while step < config.steps:
            idx = order(step)
            x = model.normalizer.normalize(latents[idx].to(device=device, dtype=torch.float32))
            t = _apply_time_shift(torch.rand(x.shape[0], generator=generator, device=device), shift)
            noise = torch.randn(x.shape, generator=generator, device=device)
            y = None
            if labels is not None:
                y = labels[idx].to(device=device, dtype=torch.long)
                drop = torch.rand(x.shape[0], generator=generator, device=device)
                y = torch.where(drop < config.class_dropout_prob, torch.full_like(y, null), y)
            loss = flow_matching_loss(model, x, t, noise, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            decay = ema_decay_at(step, config.ema_decay, config.ema_warmup)
            _ema_update(ema, model, decay)
            step += 1
            # Accumulated on the device: no host sync per step.
            loss_sum += loss.detach().double()
            run_count += 1
            bar.update(1)
            logging = step % config.log_every == 0 or step == config.steps
            checkpointing = ckpt_dir is not None and (
                step % config.checkpoint_every == 0 or step == config.steps
            )
            if logging or checkpointing:
                run_sum += float(loss_sum)
                loss_sum.zero_()
                if not math.isfinite(run_sum):
                    raise FloatingPointError(
                        f"probe loss became {run_sum} by step {step}; lower lr or check the latents"
                    )
            if logging:
                mean_loss = run_sum / run_count
                if step % config.log_every == 0:
                    # A final partial interval is reported but stays open in the checkpoint,
                    # so a resumed run logs exactly what an uninterrupted one does.
                    history.append((step, mean_loss))
                    run_sum, run_count = 0.0, 0
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", mean_loss, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    writer.add_scalar("train/ema_decay", decay, step)
            if checkpointing:
                save_checkpoint()
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    if run_count:
        history = [*history, (step, run_sum / run_count)]
    probe = TrainedProbe(ema, config, step, history)
    if out_path is not None:
        probe.save(out_path / "probe.pt")
    return probe


def _check_resumable(
    state: dict[str, Any], config: ProbeTrainConfig, model_config: SiTConfig, path: Path
) -> None:
    if state.get("format") != _CKPT_FORMAT:
        raise ValueError(f"{path} is not a probe checkpoint; remove it or use another out_dir")
    saved = ProbeTrainConfig.from_dict(state["config"]).to_dict()
    now = config.to_dict()
    diff = sorted(k for k in now if k not in _RESUME_FREE_FIELDS and now[k] != saved.get(k))
    if diff:
        raise ValueError(
            f"cannot resume from {path}: config fields {diff} differ from the checkpoint's; "
            "use resume=False or another out_dir"
        )
    if state["model_config"] != model_config.to_dict():
        raise ValueError(
            f"cannot resume from {path}: the latents/labels imply a different model "
            f"({model_config.to_dict()} vs {state['model_config']})"
        )


def _summary_writer(log_dir: Path, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        warnings.warn(
            "tensorboard is not installed, so the probe's training log is not written; "
            "install ifid-callback[probes]",
            stacklevel=3,
        )
        return None
    # purge_step hides events of an earlier (interrupted or discarded) run from this step on.
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
