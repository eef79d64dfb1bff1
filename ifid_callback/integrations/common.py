"""What every framework adapter shares: argument checks, finding the VAE, naming logged keys.

Framework-free, so the adapters keep only the translation of their framework's hooks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ifid_callback import json_numbers
from ifid_callback.distributed import all_reduce_int, world_and_rank
from ifid_callback.evaluate import images_of
from ifid_callback.monitor import BOOKKEEPING_KEYS, IFIDMonitor

__all__ = [
    "MONITOR_FILENAME",
    "SharedEvaluation",
    "ValidationWindow",
    "build_monitor",
    "check_adapter_arguments",
    "find_vae",
    "logged_metrics",
    "observe_batch",
    "report_to_targets",
    "strict_last_entry",
]

VAE_KEYS = ("vae", "encoder", "decoder")
#: The file a Hugging Face Trainer checkpoint keeps the monitor's state in.
MONITOR_FILENAME = "ifid_monitor.pt"


def check_adapter_arguments(owner: str, monitor: Any, monitor_kwargs: Mapping[str, Any]) -> None:
    """Validate an adapter's ``monitor=`` / ``**monitor_kwargs`` pair."""
    if monitor is not None and not isinstance(monitor, IFIDMonitor):
        raise TypeError(f"monitor must be an IFIDMonitor or None, got {type(monitor).__name__}.")
    if monitor is not None and monitor_kwargs:
        raise ValueError(
            f"Pass either a ready monitor or IFIDMonitor arguments, not both (got monitor and "
            f"{sorted(monitor_kwargs)})."
        )
    if monitor is None and "eval_images" not in monitor_kwargs:
        raise ValueError(
            f"{owner} needs evaluation images: pass eval_images=<(N, C, H, W) tensor or Dataset> "
            "(or a ready monitor=IFIDMonitor(...))."
        )


def build_monitor(monitor_kwargs: Mapping[str, Any], model: Any, owner: str) -> IFIDMonitor:
    """An :class:`IFIDMonitor` from an adapter's arguments; the VAE found on ``model`` if absent."""
    kwargs = dict(monitor_kwargs)
    if not any(kwargs.get(k) is not None for k in VAE_KEYS):
        kwargs["vae"] = find_vae(model, owner)
    return IFIDMonitor(**kwargs)


def knows_vae(monitor_kwargs: Mapping[str, Any]) -> bool:
    """Whether the arguments name the VAE (then the monitor can be built before training)."""
    return any(monitor_kwargs.get(k) is not None for k in VAE_KEYS)


def find_vae(model: Any, owner: str) -> Any:
    """``model.vae``, or the model itself when it has ``encode``/``decode``; the same of
    ``model.module`` for a wrapper (DDP) whose own attributes have neither."""
    for candidate in (model, getattr(model, "module", None)):
        vae = getattr(candidate, "vae", None)
        if vae is not None:
            return vae
        if callable(getattr(candidate, "encode", None)) and callable(
            getattr(candidate, "decode", None)
        ):
            return candidate
    raise ValueError(
        f"{owner} cannot find the VAE of {type(model).__name__}: give the model a `vae` "
        "attribute or encode()/decode() methods, or pass vae= (or encoder=/decoder=)."
    )


def logged_metrics(
    result: Mapping[str, float], prefix: str = "val/", names: Mapping[str, str] | None = None
) -> dict[str, float]:
    """The numbers of an evaluation under their logged names: ``prefix + name``.

    Every metric entry of ``result`` is kept (``ifid``, ``rfid`` and whatever else the metric
    computes, with the suffixes of extra weights such as ``ifid_ema``), and so are the bank's
    size and its neighbours' ages (``bank_size``, ``neighbor_age_median``, ``neighbor_age_p90``);
    ``step`` and ``num_eval_images`` are not. ``names`` renames a metric and its suffixed
    variants: ``{"ifid": "iFID"}`` logs ``ifid_ema`` as ``iFID_ema``.
    """
    names = dict(names or {})
    out = {}
    for key, value in result.items():
        if key in BOOKKEEPING_KEYS and key != "bank_size":
            continue
        base, sep, rest = key.partition("_")
        name = names.get(key) or (names[base] + sep + rest if base in names else key)
        out[f"{prefix}{name}"] = float(value)
    return out


def is_fid_name(name: str | None, names: tuple[str, ...] = ("ifid", "rfid")) -> bool:
    """Whether a logged name is an iFID/rFID (of any weights: ``val/ifid``, ``eval_rfid_ema``)."""
    parts = str(name or "").replace("/", "_").split("_")
    return parts[-1] in names or (len(parts) > 1 and parts[-2] in names and parts[-1] != "std")


def check_watch_mode(watcher: str, key: str | None, mode: str, names: tuple[str, ...]) -> None:
    """A checkpoint/early-stopping rule watching an iFID/rFID key must minimise it."""
    if key is not None and is_fid_name(key, names) and mode != "min":
        raise ValueError(
            f"{watcher}(monitor={key!r}, mode={mode!r}): {key} is lower-is-better, so "
            f"mode={mode!r} would keep the worst model. Use {watcher}(monitor={key!r}, mode='min')."
        )


def check_watchers(callbacks: list[Any], names: tuple[str, ...]) -> None:
    """Every checkpoint/early-stopping callback (``monitor``/``mode`` attributes) watching an
    iFID/rFID name minimises it."""
    for callback in callbacks:
        key = getattr(callback, "monitor", None)
        if isinstance(key, str):
            mode = getattr(callback, "mode", "min")
            check_watch_mode(type(callback).__name__, key, mode, names)


def check_validation_loop(owner: str, key: str, enabled: bool, defined: bool) -> None:
    """Validation switched off is an error, a fit without a validation loop a warning."""
    if not enabled:
        raise ValueError(
            f"{owner} evaluates at each validation, but limit_val_batches=0 turns it off, so "
            f"{key!r} would never be logged. Give the trainer a val_dataloader and "
            "limit_val_batches > 0."
        )
    if not defined:
        warnings.warn(
            f"{owner} evaluates at each validation, but this fit has no validation loop (no "
            f"validation_step or no val_dataloader), so {key!r} is never logged during "
            "training. Define validation_step and pass val_dataloaders to trainer.fit(...), or "
            "evaluate afterwards with trainer.validate(...).",
            UserWarning,
            stacklevel=3,
        )


def check_best_metric(name: str | None, greater_is_better: bool | None) -> None:
    """The Hugging Face Trainer's ``metric_for_best_model`` on iFID/rFID must be minimised."""
    if is_fid_name(name) and greater_is_better:
        raise ValueError(
            f"metric_for_best_model={name!r} is lower-is-better but greater_is_better is True "
            "(the Trainer's default for names not ending in 'loss'); set "
            "TrainingArguments(greater_is_better=False)."
        )


def validation_result(
    monitor: IFIDMonitor, step: int | None, relog_last: bool, key: str = "val/ifid"
) -> tuple[dict[str, float] | None, bool]:
    """What a validation logs: ``(result, fresh)``, or ``(None, False)`` for nothing.

    ``step=None`` (a stand-alone validation of loaded weights) evaluates with the bank at hand
    (warning when there is none); during a fit an evaluation runs when due (always without
    ``eval_every_n_steps``, and at the first validation), otherwise the last result is logged
    again when ``relog_last``.
    """
    if step is None:
        if len(monitor.bank) == 0:
            warnings.warn(
                f"There are no training latents to search, so trainer.validate() logs no "
                f"{key!r}: validate after fit, or with ckpt_path= a checkpoint saved while the "
                "iFID callback was training.",
                UserWarning,
                stacklevel=4,
            )
            return None, False
        return monitor.evaluate(), True
    if _due(monitor, step):
        if no_latents_yet(monitor, step, key):
            return None, False
        return monitor.evaluate(step), True
    return (monitor.last_result, False) if relog_last else (None, False)


def no_latents_yet(monitor: IFIDMonitor, step: int, key: str) -> bool:
    """Whether an evaluation during training comes before any training latents (on some rank:
    all ranks agree, evaluating is collective); if so, warns that it logs no ``key``.

    Such an evaluation (a baseline before training, HF ``eval_on_start=True``) has nothing to
    search: it logs its loss without iFID instead of stopping the training run.
    """
    world, _ = world_and_rank()
    local = len(monitor.bank)
    if (all_reduce_int(local, "min") if world > 1 else local) > 0:
        return False
    warnings.warn(
        f"No training latents yet at step {step} (an evaluation before training, e.g. "
        f"eval_on_start=True): this evaluation logs no {key!r}; the evaluations after training "
        "steps do.",
        UserWarning,
        stacklevel=5,
    )
    return True


class ValidationWindow:
    """The evaluations of one validation, placed where the weights of the validation are.

    A weight-averaging callback (Lightning's ``WeightAveraging``) puts the averaged weights in
    place in its validation-start hook and the training weights back in its validation-end hook.
    Called from the adapter's own start and end hooks, this evaluates in the one that falls
    inside that window (the start when the averaging callback runs first, else the end), so the
    numbers measure the weights of the validation loss; with ``raw_name`` the other hook, which
    sees the training weights, measures them too (``ifid_<raw_name>``, ... in the same result).

    Args:
        relog_last: see :func:`validation_result`.
        key: the logged iFID name (for warnings).
        raw_name: suffix for the training weights' numbers, or None to skip them.
    """

    def __init__(self, relog_last: bool, key: str, raw_name: str | None = None) -> None:
        self.relog_last, self.key, self.raw_name = relog_last, key, raw_name
        self.result: tuple[dict[str, float] | None, bool] | None = None
        self.raw: dict[str, float] | None = None

    def start(
        self, monitor: IFIDMonitor, active: bool, step: int | None, first: bool, swaps: bool
    ) -> None:
        """``active``: a validation to measure; ``first``: the averaging runs before us;
        ``swaps``: an averaging callback swaps weights in this validation."""
        self.result, self.raw = None, None
        if not active:
            self.result = (None, False)
        elif first:
            self.result = validation_result(monitor, step, self.relog_last, self.key)
        elif swaps and self.raw_name and _due(monitor, step):
            self.raw = monitor.measure()

    def end(
        self, monitor: IFIDMonitor, active: bool, step: int | None, first: bool, swaps: bool
    ) -> tuple[dict[str, float] | None, bool]:
        """``(result, fresh)`` to log (``(None, False)``: nothing)."""
        if self.result is None:
            self.result = validation_result(monitor, step, self.relog_last, self.key)
        elif swaps and self.raw_name and self.result[1]:
            self.raw = monitor.measure()
        (result, fresh), raw, self.result, self.raw = self.result, self.raw, None, None
        if result is not None and fresh and raw is not None:
            extra = {f"{key}_{self.raw_name}": value for key, value in raw.items()}
            result = {**result, **extra}
            monitor.history[-1].update(extra)  # re-logged with the rest when not due
        return result, fresh


def _due(monitor: IFIDMonitor, step: int | None) -> bool:
    return (
        step is None
        or monitor.eval_every_n_steps is None
        or monitor.due(step)
        or not monitor.history
    )


def precedes(callbacks: list[Any], me: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a callback of one of ``kinds`` comes before ``me`` in the call order."""
    position = next(i for i, c in enumerate(callbacks) if c is me)
    return any(isinstance(c, kinds) for c in callbacks[:position])


class SharedEvaluation:
    """One evaluation shared by the calls that see the same weights (a Trainer's eval sets)."""

    def __init__(self) -> None:
        self.result: dict[str, float] | None = None

    def get(self, monitor: IFIDMonitor, step: int, share: bool) -> dict[str, float]:
        if share and self.result is not None:
            return self.result
        result = monitor.evaluate(step)
        if share:
            self.result = result
        return result

    def end(self) -> None:
        """Forget the shared result: the next evaluation measures the weights loaded then."""
        self.result = None


def observe_batch(monitor: IFIDMonitor, outputs: Any, batch: Any, step: int, producer: str) -> int:
    """Hand one training batch to the monitor: the step's outputs, and its images when needed."""
    images = None
    if monitor.latent_source == "encode" or monitor.exact_bank:
        images = images_of(batch)
    if monitor.latent_source != "outputs":
        return monitor.observe(images=images, step=step)
    if outputs is None:
        raise ValueError(
            f"{producer} returned nothing, so iFID has no latents: return "
            f"{{'loss': loss, {monitor.outputs_key!r}: latents.detach()}} or use "
            "latent_source='hook' / 'encode'."
        )
    return monitor.observe(outputs=outputs, images=images, step=step)


def check_eval_strategy(strategy: Any) -> None:
    """Warn when the Hugging Face Trainer never evaluates during training."""
    if str(getattr(strategy, "value", strategy)) == "no":
        warnings.warn(
            "IFIDTrainerCallback computes iFID inside the Trainer's evaluations, but "
            "eval_strategy='no' (the default) never evaluates during training, so eval_ifid "
            "is never logged. Set TrainingArguments(eval_strategy='steps', eval_steps=N) (and "
            "save_steps=N for best-model selection), or call trainer.evaluate() yourself.",
            UserWarning,
            stacklevel=4,
        )


def check_trainer_evaluated(metrics: Mapping[str, Any] | None) -> None:
    """A Hugging Face evaluation without iFID ran on a Trainer that lacks the mixin."""
    if metrics is not None and not any(k.endswith("_ifid") for k in metrics):
        raise RuntimeError(
            "The evaluation metrics have no eval_ifid: IFIDTrainerCallback computes iFID inside "
            "the evaluation, which needs the Trainer class from "
            "ifid_callback.integrations.transformers (IFIDTrainer, or IFIDTrainerMixin mixed "
            "into your Trainer subclass)."
        )


def save_state(monitor: IFIDMonitor | None, folder: str) -> None:
    """Write the monitor's state to ``<folder>/ifid_monitor.pt`` when the folder exists."""
    if monitor is not None and os.path.isdir(folder):
        torch.save(monitor.state_dict(), os.path.join(folder, MONITOR_FILENAME))


def load_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The monitor state saved by :func:`save_state` in ``folder``, or None."""
    path = os.path.join(folder, MONITOR_FILENAME)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def report_to_targets(callbacks: list[Any]) -> list[Any]:
    """The image-capable loggers behind a Hugging Face Trainer's ``report_to`` callbacks: the
    TensorBoard callback's writer, the active W&B run and the active MLflow run (others log
    scalars only)."""
    targets = []
    for callback in callbacks:
        kind = type(callback).__name__
        if kind == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
            targets.append(callback.tb_writer)
        elif kind == "WandbCallback" and getattr(callback, "_initialized", False):
            run = getattr(getattr(callback, "_wandb", None), "run", None)
            if run is not None:
                targets.append(run)
        elif kind == "MLflowCallback" and getattr(callback, "_initialized", False):
            run = callback._ml_flow.active_run()
            if run is not None:
                targets.append(run)
    return targets


def strict_last_entry(history: list[dict[str, Any]]) -> None:
    """Make the last entry of a Hugging Face ``log_history`` strict JSON, in place.

    The Trainer writes ``log_history`` to ``trainer_state.json`` with ``json.dumps``, which
    writes ``Infinity``/``NaN`` that strict parsers reject. A non-finite number becomes ``null``
    plus a flag (:func:`ifid_callback.json_numbers.strict_values`): a lossless PSNR
    ``"eval_psnr": null, "eval_psnr_lossless": true``; any other (a NaN ``loss``, an inf
    ``grad_norm``) ``"<key>": null, "<key>_nonfinite": "nan"`` (or ``"inf"``, ``"-inf"``).
    """
    if history and not json_numbers.is_strict(history[-1]):
        history[-1] = json_numbers.strict_values(history[-1])
