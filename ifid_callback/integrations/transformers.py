"""iFID and rFID as evaluation metrics of the Hugging Face Trainer (best model, early stopping, logs).

The Trainer logs an evaluation's metrics *before* it calls the callbacks' ``on_evaluate``, so
:class:`IFIDTrainerMixin` (or the ready :class:`IFIDTrainer`) adds ``eval_ifid``, ``eval_rfid``
(and every other number of the evaluation) inside ``evaluation_loop``: they reach
``log_history``, every ``report_to`` logger, ``EarlyStoppingCallback`` and
``metric_for_best_model``. :class:`IFIDTrainerCallback` feeds the monitor during training and
checkpoints it. Settings: ``eval_strategy="steps"`` (iFID is computed at every evaluation),
``save_steps`` equal to ``eval_steps`` for best-model selection,
``metric_for_best_model="eval_ifid"`` with ``greater_is_better=False``. An ``eval_dataset`` is
needed for the Trainer to evaluate at all; iFID uses the monitor's fixed ``eval_images``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ifid_callback.integrations import common
from ifid_callback.integrations.loggers import log_grids
from ifid_callback.monitor import IFIDMonitor

__all__ = ["MONITOR_FILENAME", "IFIDTrainer", "IFIDTrainerCallback", "IFIDTrainerMixin"]

MONITOR_FILENAME = common.MONITOR_FILENAME


class IFIDTrainerCallback(TrainerCallback):
    """Feeds an :class:`~ifid_callback.monitor.IFIDMonitor` from the Trainer's training steps.

    At ``on_train_begin`` the model is hooked (:meth:`IFIDMonitor.attach`: with the default
    ``latent_source="outputs"`` its forward returns the latents under ``outputs_key``); at each
    optimizer step the collected latents go to the bank. The monitor's state is written to
    ``<checkpoint>/ifid_monitor.pt`` at every save and read back by
    ``IFIDTrainer.train(resume_from_checkpoint=...)``.

    ``log_history`` (``trainer_state.json``) stays strict JSON: a lossless PSNR is logged there
    as ``"eval_psnr": null, "eval_psnr_lossless": true`` (:mod:`ifid_callback.json_numbers`);
    the returned metrics, the ``report_to`` loggers and best-model selection keep +inf.

    Args:
        monitor: a ready monitor, or None to build one at ``on_train_begin`` from
            ``monitor_kwargs`` (``vae`` defaults to ``model.vae``, or the model itself).
        log_grid: log the titled image grid to the TensorBoard, W&B and MLflow ``report_to``
            loggers at the step of the evaluation's scalars.
        **monitor_kwargs: :class:`IFIDMonitor` arguments (``eval_images`` is required).

    Raises ValueError at Trainer construction when ``metric_for_best_model`` names iFID/rFID
    with ``greater_is_better`` True; warns when ``eval_strategy="no"``.
    """

    def __init__(
        self, monitor: IFIDMonitor | None = None, *, log_grid: bool = True, **monitor_kwargs: Any
    ) -> None:
        common.check_adapter_arguments("IFIDTrainerCallback", monitor, monitor_kwargs)
        if monitor is None and common.knows_vae(monitor_kwargs):
            monitor = IFIDMonitor(**monitor_kwargs)
        self.monitor, self.monitor_kwargs, self.log_grid = monitor, monitor_kwargs, log_grid
        self._pending_state: dict[str, Any] | None = None
        self.shared = common.SharedEvaluation()
        self._without_ifid = False

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: Any, **kw) -> None:
        common.check_best_metric(args.metric_for_best_model, args.greater_is_better)
        common.check_eval_strategy(args.eval_strategy)

    def on_train_begin(self, args: Any, state: Any, control: Any, model=None, **kw) -> None:
        self.ensure_monitor(model).attach(model)

    def ensure_monitor(self, model: nn.Module | None) -> IFIDMonitor:
        if self.monitor is None:
            self.monitor = common.build_monitor(self.monitor_kwargs, model, "IFIDTrainerCallback")
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.monitor

    def on_train_end(self, args: Any, state: Any, control: Any, **kw) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kw) -> None:
        self.monitor.observe(step=state.global_step)

    def evaluation_metrics(self, trainer: Trainer, prefix: str, share: bool) -> dict[str, float]:
        """``{f"{prefix}_ifid", f"{prefix}_rfid", ...}`` of the weights loaded now.

        With ``share`` (the eval datasets of one ``Trainer.evaluate`` call, which see the same
        weights) the first result of the call is reused. Logs the grid with a fresh result.
        """
        monitor, step = self.ensure_monitor(trainer.model), trainer.state.global_step
        self._without_ifid = common.no_latents_yet(monitor, step, f"{prefix}_ifid")
        if self._without_ifid:
            return {}
        fresh = not (share and self.shared.result is not None)
        result = self.shared.get(monitor, step, share)
        if fresh and self.log_grid and trainer.state.is_world_process_zero:
            targets = common.report_to_targets(trainer.callback_handler.callbacks)
            log_grids(monitor, targets, f"{prefix}/ifid_grid", step, "train/global_step")
        return common.logged_metrics(result, f"{prefix}_")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics=None, **kw) -> None:
        if not self._without_ifid:  # else it warned: no training latents to search yet
            common.check_trainer_evaluated(metrics)
        self._without_ifid = False

    def on_log(self, args: Any, state: TrainerState, control: Any, logs=None, **kw) -> None:
        common.strict_last_entry(state.log_history)  # the entry of this log, appended just now

    def on_save(self, args: TrainingArguments, state: TrainerState, control: Any, **kw) -> None:
        if state.is_world_process_zero:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            common.save_state(self.monitor, os.path.join(args.output_dir, folder))

    def load_checkpoint(self, checkpoint_dir: str | os.PathLike) -> bool:
        """Restore the monitor from ``<checkpoint_dir>/ifid_monitor.pt``; False when absent."""
        state = common.load_state(checkpoint_dir)
        if state is not None and self.monitor is None:
            self._pending_state = state
        elif state is not None:
            self.monitor.load_state_dict(state)
        return state is not None


class IFIDTrainerMixin:
    """Adds the iFID evaluation's metrics to the Trainer's (``class T(IFIDTrainerMixin, Trainer)``).

    Each ``evaluate()`` call measures the weights loaded when it runs (after
    ``load_best_model_at_end``: the best model's), once for all of its eval datasets.
    ``train(resume_from_checkpoint)`` also restores the monitor saved in that checkpoint.
    """

    _ifid_evaluating = False

    def _ifid_callbacks(self) -> list[IFIDTrainerCallback]:
        return [c for c in self.callback_handler.callbacks if isinstance(c, IFIDTrainerCallback)]

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        # Nested calls (one per eval dataset) share one iFID pass; the next call measures again.
        if self._ifid_evaluating:
            return super().evaluate(*args, **kwargs)
        self._ifid_evaluating = True
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._ifid_evaluating = False
            for callback in self._ifid_callbacks():
                callback.shared.end()

    def evaluation_loop(self, dataloader: Any, description: str, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(dataloader, description, *args, **kwargs)
        if description == "Evaluation":
            prefix = kwargs.get("metric_key_prefix", args[2] if len(args) > 2 else "eval")
            for callback in self._ifid_callbacks():
                metrics = callback.evaluation_metrics(self, prefix, self._ifid_evaluating)
                output.metrics.update(metrics)
        return output

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, (str, os.PathLike)):
            for callback in self._ifid_callbacks():
                callback.load_checkpoint(checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)


class IFIDTrainer(IFIDTrainerMixin, Trainer):
    """``transformers.Trainer`` whose evaluations include iFID/rFID (see :class:`IFIDTrainerMixin`)."""
