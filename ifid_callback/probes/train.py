"""Flow-matching training of SiT probes on cached latents: seeded, checkpointed and resumable.

The recipe is :class:`~ifid_callback.probes.probe_config.ProbeTrainConfig`, the loss and EMA
are in :mod:`~ifid_callback.probes.flow_matching`, the batches in
:mod:`~ifid_callback.probes.batch_order`, the files in :mod:`~ifid_callback.probes.checkpoints`,
and the result is a :class:`~ifid_callback.probes.trained_probe.TrainedProbe`; this module runs
the loop (:func:`train_probe`). Those names are importable from here too.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .batch_order import BatchOrder
from .checkpoints import CKPT_FORMAT, atomic_save, check_resumable, list_checkpoints
from .flow_matching import ema_decay_at, ema_update, flow_matching_loss
from .probe_config import ProbeTrainConfig, resolve_time_shift
from .sampling import time_shift as _apply_time_shift
from .sit import SiT, SiTConfig
from .trained_probe import TrainedProbe

__all__ = [
    "ProbeTrainConfig",
    "TrainedProbe",
    "ema_decay_at",
    "flow_matching_loss",
    "resolve_time_shift",
    "train_probe",
]


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
    existing = list_checkpoints(ckpt_dir) if ckpt_dir is not None else []
    if not resume:
        for _, old in existing:  # a fresh run must not later resume from a stale checkpoint
            old.unlink()
    elif existing:
        state = torch.load(existing[-1][1], map_location=device, weights_only=True)
        check_resumable(state, config, model_config, existing[-1][1])
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
        atomic_save(
            {
                "format": CKPT_FORMAT,
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
        for _, old in list_checkpoints(ckpt_dir)[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)

    writer = None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / "config.json").write_text(
            json.dumps({"train": config.to_dict(), "model": model_config.to_dict()}, indent=2)
        )
        writer = _summary_writer(out_path / "tb", step)
    order = BatchOrder(n, config.batch_size, config.seed)
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
            ema_update(ema, model, decay)
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
