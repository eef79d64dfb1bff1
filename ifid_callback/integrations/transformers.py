"""iFID and rFID as evaluation metrics of the Hugging Face Trainer (best model, early stopping, logs).

The Trainer logs an evaluation's metrics (``log_history``, TensorBoard) *before* it calls the
callbacks' ``on_evaluate``, so a callback that adds ``eval_ifid`` there reaches
``metric_for_best_model`` but never the logs. Here the metric is added inside the evaluation
itself: :class:`IFIDTrainerMixin` (or the ready :class:`IFIDTrainer`) extends
``Trainer.evaluation_loop`` so that ``eval_ifid`` and ``eval_rfid`` are part of the evaluation's
metrics, and :class:`IFIDTrainerCallback` feeds the monitor during training and checkpoints it.

Required settings::

    args = TrainingArguments(
        eval_strategy="steps", eval_steps=500,     # iFID is computed at every evaluation
        save_strategy="steps", save_steps=500,     # saves must line up with evaluations
        metric_for_best_model="eval_ifid",         # or "eval_rfid"
        greater_is_better=False,                   # the default (True) would keep the worst
        load_best_model_at_end=True,               # optional
        report_to=["tensorboard"],                 # optional; eval_ifid shows up as eval/ifid
    )
    trainer = IFIDTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                          callbacks=[IFIDTrainerCallback(eval_images=val_images)])

An ``eval_dataset`` is needed for the Trainer to evaluate at all (its loss is computed as usual);
iFID itself uses the monitor's fixed ``eval_images``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ifid_callback.integrations.common import check_adapter_arguments
from ifid_callback.monitor import IFIDMonitor

__all__ = ["MONITOR_FILENAME", "IFIDTrainer", "IFIDTrainerCallback", "IFIDTrainerMixin"]

MONITOR_FILENAME = "ifid_monitor.pt"
_VAE_KEYS = ("vae", "encoder", "decoder")


class IFIDTrainerCallback(TrainerCallback):
    """Feeds an :class:`~ifid_callback.monitor.IFIDMonitor` from the Trainer's training steps.

    At ``on_train_begin`` it hooks the model (see :meth:`IFIDMonitor.attach`): with the default
    ``latent_source="outputs"`` the model's forward returns its latents under ``outputs_key``
    (``{"loss": loss, "latents": posterior.mean.detach()}`` or a ``ModelOutput`` field); ``"hook"``
    hooks the encoder module; ``"encode"`` keeps the ``pixel_values`` of each training forward and
    re-encodes part of them. At each optimizer step (``on_step_end``) the collected latents go to
    the bank. Evaluation happens in :class:`IFIDTrainerMixin`; ``on_evaluate`` only checks that it
    did. The monitor's state is written to ``<checkpoint>/ifid_monitor.pt`` at every save and read
    back by ``IFIDTrainer.train(resume_from_checkpoint=...)``.

    Args:
        monitor: a ready monitor, or None to build one at ``on_train_begin`` from
            ``monitor_kwargs`` (``vae`` defaults to ``model.vae``, or the model itself when it has
            ``encode``/``decode``).
        **monitor_kwargs: :class:`IFIDMonitor` arguments (``eval_images`` is required).

    Raises:
        ValueError: at Trainer construction when ``metric_for_best_model`` names iFID/rFID but
            ``greater_is_better`` is not False.

    Warns:
        UserWarning: at Trainer construction when ``eval_strategy="no"`` (no evaluation during
            training, so no ``eval_ifid``).
    """

    def __init__(self, monitor: IFIDMonitor | None = None, **monitor_kwargs: Any) -> None:
        check_adapter_arguments("IFIDTrainerCallback", monitor, monitor_kwargs)
        if monitor is None and any(monitor_kwargs.get(k) is not None for k in _VAE_KEYS):
            monitor = IFIDMonitor(**monitor_kwargs)
        self.monitor = monitor
        self.monitor_kwargs = monitor_kwargs
        self._pending_state: dict[str, Any] | None = None
        # The result of the evaluation in progress, shared by its eval datasets; None outside one.
        self._shared_result: dict[str, float] | None = None

    # ------------------------------------------------------------------ setup
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        name = args.metric_for_best_model or ""
        if name.removeprefix("eval_").endswith(("ifid", "rfid")) and args.greater_is_better:
            raise ValueError(
                f"metric_for_best_model={name!r} is lower-is-better but greater_is_better is "
                "True (the Trainer's default for names not ending in 'loss'); set "
                "TrainingArguments(greater_is_better=False)."
            )
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            warnings.warn(
                "IFIDTrainerCallback computes iFID inside the Trainer's evaluations, but "
                "eval_strategy='no' (the default) never evaluates during training, so eval_ifid "
                "is never logged. Set TrainingArguments(eval_strategy='steps', eval_steps=N) (and "
                "save_steps=N for best-model selection), or call trainer.evaluate() yourself.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        self._ensure_monitor(model)
        self.monitor.attach(model)

    def _ensure_monitor(self, model: nn.Module | None) -> IFIDMonitor:
        if self.monitor is None:
            if model is None:
                raise ValueError("IFIDTrainerCallback needs the model to find its VAE.")
            kwargs = dict(self.monitor_kwargs)
            kwargs["vae"] = _find_vae(model)
            self.monitor = IFIDMonitor(**kwargs)
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.monitor

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    # ------------------------------------------------------------------ training
    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.monitor.observe(step=state.global_step)

    # ------------------------------------------------------------------ evaluation
    def evaluation_metrics(
        self, step: int, prefix: str = "eval", model: Any = None, *, share: bool = False
    ) -> dict:
        """``{f"{prefix}_ifid", f"{prefix}_rfid"}`` of the weights loaded now, at ``step``.

        With ``share=True`` (inside one ``Trainer.evaluate`` call, whose eval datasets all see
        the same weights) the first result of that call is reused; otherwise the monitor runs.
        """
        monitor = self._ensure_monitor(model)
        if share and self._shared_result is not None:
            result = self._shared_result
        else:
            result = monitor.evaluate(step)
            if share:
                self._shared_result = result
        return {f"{prefix}_ifid": result["ifid"], f"{prefix}_rfid": result["rfid"]}

    def end_evaluation(self) -> None:
        """Forget the shared result: the next evaluation measures the weights loaded then."""
        self._shared_result = None

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics is not None and not any(k.endswith("_ifid") for k in metrics):
            raise RuntimeError(
                "The evaluation metrics have no eval_ifid: IFIDTrainerCallback computes iFID "
                "inside the evaluation, which needs the Trainer class from "
                "ifid_callback.integrations.transformers (IFIDTrainer, or IFIDTrainerMixin "
                "mixed into your Trainer subclass)."
            )

    # ------------------------------------------------------------------ checkpoints
    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.monitor is None or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.monitor.state_dict(), os.path.join(folder, MONITOR_FILENAME))

    def load_checkpoint(self, checkpoint_dir: str | os.PathLike) -> bool:
        """Restore the monitor from ``<checkpoint_dir>/ifid_monitor.pt``; False when absent."""
        path = os.path.join(checkpoint_dir, MONITOR_FILENAME)
        if not os.path.isfile(path):
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if self.monitor is None:
            self._pending_state = state
        else:
            self.monitor.load_state_dict(state)
        return True


class IFIDTrainerMixin:
    """Adds ``<prefix>_ifid`` / ``<prefix>_rfid`` to the Trainer's evaluation metrics.

    Mix into a Trainer subclass (``class MyTrainer(IFIDTrainerMixin, Trainer)``) used with an
    :class:`IFIDTrainerCallback`. The metrics are added in ``evaluation_loop``, before the
    Trainer logs them, so they reach ``log_history``, TensorBoard, ``on_evaluate`` callbacks
    (``EarlyStoppingCallback``) and ``metric_for_best_model``. Each ``evaluate()`` call measures
    the weights loaded when it runs (after ``load_best_model_at_end``: the best model's), once
    for all of its eval datasets. ``train(resume_from_checkpoint)`` also restores the monitor
    saved in that checkpoint.
    """

    _ifid_evaluating = False

    def _ifid_callbacks(self) -> list[IFIDTrainerCallback]:
        return [c for c in self.callback_handler.callbacks if isinstance(c, IFIDTrainerCallback)]

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        # One call is one evaluation of the weights loaded now: its eval datasets (nested
        # evaluate calls) share one iFID pass; the next call measures again, even at the same
        # global step (e.g. after load_best_model_at_end restored other weights).
        if self._ifid_evaluating:
            return super().evaluate(*args, **kwargs)
        self._ifid_evaluating = True
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._ifid_evaluating = False
            for callback in self._ifid_callbacks():
                callback.end_evaluation()

    def evaluation_loop(self, dataloader: Any, description: str, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(dataloader, description, *args, **kwargs)
        callbacks = self._ifid_callbacks()
        if description == "Evaluation" and callbacks:
            prefix = kwargs.get("metric_key_prefix", args[2] if len(args) > 2 else "eval")
            for callback in callbacks:
                output.metrics.update(
                    callback.evaluation_metrics(
                        self.state.global_step, prefix, self.model, share=self._ifid_evaluating
                    )
                )
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


def _find_vae(model: nn.Module) -> Any:
    model = getattr(model, "module", model)  # unwrap DDP
    vae = getattr(model, "vae", None)
    if vae is not None:
        return vae
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return model
    raise ValueError(
        f"IFIDTrainerCallback cannot find the VAE of {type(model).__name__}: give the model a "
        "`vae` attribute or encode()/decode() methods, or pass vae= (or encoder=/decoder=)."
    )
