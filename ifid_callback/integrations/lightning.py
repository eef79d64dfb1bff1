"""Lightning callback that logs iFID and rFID of the model's VAE at validation epoch end."""

from __future__ import annotations

import warnings
from typing import Any

try:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.model_helpers import is_overridden
except ImportError:  # the standalone package
    from pytorch_lightning import LightningModule, Trainer
    from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger
    from pytorch_lightning.utilities.model_helpers import is_overridden

from ifid_callback.evaluate import images_of
from ifid_callback.integrations.common import check_adapter_arguments
from ifid_callback.monitor import IFIDMonitor

__all__ = ["IFIDCallback"]

_VAE_KEYS = ("vae", "encoder", "decoder")


class IFIDCallback(Callback):
    """Logs ``val/ifid`` and ``val/rfid`` so checkpointing and early stopping can use them.

    Every training batch (``on_train_batch_end``) the callback hands the batch's latents to an
    :class:`~ifid_callback.monitor.IFIDMonitor` (cheap: a bank insertion). At the end of each
    validation epoch (``on_validation_epoch_end``, skipped during the sanity check; also in
    ``trainer.validate``, e.g. ``ckpt_path="best"``, which measures the loaded weights with the
    bank restored from that checkpoint) it evaluates iFID/rFID on the monitor's fixed evaluation
    set and logs them with ``pl_module.log(..., sync_dist=True)``, so
    ``ModelCheckpoint(monitor="val/ifid", mode="min")`` and ``EarlyStopping(monitor="val/ifid",
    mode="min")`` see them, and adds the image grid (x | NN(x) | interpolant | reconstruction) to
    a TensorBoard logger at the step of those scalars.

    With ``eval_every_n_steps`` set on the monitor, validations before it is due re-log the last
    values (``relog_last=True``) so monitoring callbacks always find the keys; EarlyStopping's
    patience then counts those validations too. The callback needs a validation loop (a
    ``validation_step`` and a ``val_dataloader``; ``limit_val_batches > 0``): at fit start a fit
    without one gets a warning, ``limit_val_batches=0`` an error, and a ``ModelCheckpoint`` or
    ``EarlyStopping`` that watches iFID/rFID with ``mode="max"`` an error (lower is better).

    Latents: with the monitor's ``latent_source="outputs"`` (default) ``training_step`` returns
    ``{"loss": loss, "latents": posterior.mean.detach()}``; ``"hook"`` hooks the encoder module;
    ``"encode"`` re-encodes part of each batch (the images are taken from the batch: a tensor, the
    first item of a tuple, or ``pixel_values``/``images`` of a dict).

    DDP: the bank of every rank is gathered at index refresh and each rank evaluates its share of
    the evaluation set; all ranks log the same numbers. The callback's state (bank, counters,
    cached real statistics, history) is saved in Lightning checkpoints and restored on resume.

    Args:
        monitor: a ready :class:`IFIDMonitor`, or None to build one in ``setup`` from
            ``monitor_kwargs`` (``vae`` defaults to ``pl_module.vae``, or the module itself when
            it has ``encode``/``decode``).
        log_prefix: prefix of the logged names (``"val/"`` gives ``val/ifid``, ``val/rfid``).
        ifid_name, rfid_name: names after the prefix.
        log_grid: add the image grid to TensorBoard loggers at each evaluation (rank 0).
        relog_last: on validations where no evaluation is due, log the last values again.
        prog_bar: show iFID in the progress bar.
        **monitor_kwargs: :class:`IFIDMonitor` arguments (``eval_images`` is required).

    Example:
        >>> callback = IFIDCallback(eval_images=val_images, feature="inception")  # doctest: +SKIP
        >>> trainer = Trainer(callbacks=[callback, ModelCheckpoint(monitor="val/ifid",
        ...                                                        mode="min")])  # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: IFIDMonitor | None = None,
        *,
        log_prefix: str = "val/",
        ifid_name: str = "ifid",
        rfid_name: str = "rfid",
        log_grid: bool = True,
        relog_last: bool = True,
        prog_bar: bool = False,
        **monitor_kwargs: Any,
    ) -> None:
        super().__init__()
        check_adapter_arguments("IFIDCallback", monitor, monitor_kwargs)
        self.monitor = monitor
        self.monitor_kwargs = monitor_kwargs
        self.log_prefix = log_prefix
        self.ifid_name = ifid_name
        self.rfid_name = rfid_name
        self.log_grid = log_grid
        self.relog_last = relog_last
        self.prog_bar = prog_bar
        self._pending_state: dict[str, Any] | None = None
        if monitor is None and any(monitor_kwargs.get(k) is not None for k in _VAE_KEYS):
            # Everything is known: build now, so a bad setting fails here rather than mid-fit.
            self.monitor = IFIDMonitor(**monitor_kwargs)

    @property
    def ifid_key(self) -> str:
        """The logged iFID name, e.g. ``"val/ifid"``."""
        return f"{self.log_prefix}{self.ifid_name}"

    @property
    def rfid_key(self) -> str:
        """The logged rFID name, e.g. ``"val/rfid"``."""
        return f"{self.log_prefix}{self.rfid_name}"

    @property
    def state_key(self) -> str:
        # Two instances logging under different names keep separate checkpoint entries.
        return self._generate_state_key(ifid=self.ifid_key, rfid=self.rfid_key)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is None:
            kwargs = dict(self.monitor_kwargs)
            if not any(kwargs.get(k) is not None for k in _VAE_KEYS):
                kwargs["vae"] = _find_vae(pl_module)
            self.monitor = IFIDMonitor(**kwargs)
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_monitoring_callbacks(trainer)
        if trainer.limit_val_batches == 0:
            raise ValueError(
                f"IFIDCallback evaluates at validation epoch end, but limit_val_batches=0 turns "
                f"validation off, so {self.ifid_key!r} would never be logged. Give the trainer a "
                "val_dataloader and limit_val_batches > 0."
            )
        if not _has_validation_loop(trainer, pl_module):
            warnings.warn(
                f"IFIDCallback evaluates at validation epoch end, but this fit has no validation "
                f"loop (no validation_step or no val_dataloader), so {self.ifid_key!r} is never "
                "logged during training. Define validation_step and pass val_dataloaders to "
                "trainer.fit(...), or evaluate afterwards with trainer.validate(...).",
                UserWarning,
                stacklevel=2,
            )
        if self.monitor.latent_source == "hook":
            self.monitor.attach()

    def _check_monitoring_callbacks(self, trainer: Trainer) -> None:
        # iFID/rFID are lower-is-better: mode="max" would keep the worst checkpoint / stop on
        # improvement, silently.
        for callback in trainer.callbacks:
            if not isinstance(callback, (ModelCheckpoint, EarlyStopping)):
                continue
            key = getattr(callback, "monitor", None)
            if key in (self.ifid_key, self.rfid_key) and getattr(callback, "mode", "min") != "min":
                raise ValueError(
                    f"{type(callback).__name__}(monitor={key!r}, mode={callback.mode!r}): "
                    f"{key} is lower-is-better, so mode={callback.mode!r} would keep the worst "
                    f"model. Use {type(callback).__name__}(monitor={key!r}, mode='min')."
                )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    # ------------------------------------------------------------------ training
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        monitor = self.monitor
        images = None
        if monitor.latent_source == "encode" or monitor.exact_bank:
            images = images_of(batch)
        if monitor.latent_source == "outputs":
            if outputs is None:
                raise ValueError(
                    "training_step returned nothing, so IFIDCallback has no latents: return "
                    f"{{'loss': loss, {monitor.outputs_key!r}: latents.detach()}} or use "
                    "latent_source='hook' / 'encode'."
                )
            monitor.observe(outputs=outputs, images=images, step=trainer.global_step)
        else:
            monitor.observe(images=images, step=trainer.global_step)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn not in ("fit", "validate"):
            return
        monitor = self.monitor
        if trainer.state.fn == "validate":
            # trainer.validate(): measure the weights loaded now (ckpt_path="best", ...) with the
            # bank restored from that checkpoint, or the one the fit left.
            if len(monitor.bank) == 0:
                warnings.warn(
                    f"IFIDCallback has no training latents to search, so trainer.validate() logs "
                    f"no {self.ifid_key!r}: validate after fit, or with ckpt_path= a checkpoint "
                    "saved while this callback was training.",
                    UserWarning,
                    stacklevel=2,
                )
                return
            result, due = monitor.evaluate(), True
        else:
            step = trainer.global_step
            due = monitor.eval_every_n_steps is None or monitor.due(step) or not monitor.history
            if due:
                result = monitor.evaluate(step)
            elif self.relog_last:
                result = monitor.last_result
            else:
                return
        pl_module.log(self.ifid_key, result["ifid"], sync_dist=True, prog_bar=self.prog_bar)
        pl_module.log(self.rfid_key, result["rfid"], sync_dist=True)
        if due and self.log_grid:
            self._log_grid(trainer)

    def _log_grid(self, trainer: Trainer) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or trainer.global_rank != 0:
            return
        grid = self.monitor.render_grid()
        step = _logged_step(trainer)
        for logger in loggers:
            logger.experiment.add_image(f"{self.log_prefix}ifid_grid", grid, global_step=step)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.monitor is None:  # restored before setup(): apply once the monitor exists
            self._pending_state = dict(state_dict)
        else:
            self.monitor.load_state_dict(state_dict)


def _logged_step(trainer: Trainer) -> int:
    # The step Lightning's logger connector gives the metrics logged at this validation's end
    # (optimizer steps taken before this batch's increment), so grid and scalars line up.
    epoch_loop = getattr(trainer.fit_loop, "epoch_loop", None)
    return int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))


def _has_validation_loop(trainer: Trainer, pl_module: LightningModule) -> bool:
    if not is_overridden("validation_step", pl_module):
        return False
    # Where fit() takes its validation batches from (the val_dataloaders argument, a datamodule
    # or the module's val_dataloader hook); unknown layouts count as present.
    loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
    source = getattr(loop, "_data_source", None)
    return source is None or not hasattr(source, "is_defined") or source.is_defined()


def _find_vae(pl_module: LightningModule) -> Any:
    vae = getattr(pl_module, "vae", None)
    if vae is not None:
        return vae
    if callable(getattr(pl_module, "encode", None)) and callable(
        getattr(pl_module, "decode", None)
    ):
        return pl_module
    raise ValueError(
        f"IFIDCallback cannot find the VAE of {type(pl_module).__name__}: give the module a "
        "`vae` attribute or encode()/decode() methods, or pass vae= (or encoder=/decoder=)."
    )
