"""Lightning callback that logs iFID and rFID of the model's VAE at each validation."""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import LightningModule, Trainer, callbacks
    from lightning.pytorch.utilities.model_helpers import is_overridden
except ImportError:  # the standalone package
    from pytorch_lightning import LightningModule, Trainer, callbacks
    from pytorch_lightning.utilities.model_helpers import is_overridden

from ifid_callback.integrations import common
from ifid_callback.integrations.loggers import log_grids
from ifid_callback.monitor import IFIDMonitor

Callback = callbacks.Callback
# Lightning's weight averaging (2.6+): WeightAveraging and its EMAWeightAveraging.
_AVERAGING = tuple(c for c in (getattr(callbacks, "WeightAveraging", None),) if c is not None)

__all__ = ["IFIDCallback"]


class IFIDCallback(Callback):
    """Logs ``val/ifid``, ``val/rfid`` (and every other number of the evaluation) each validation.

    Training batches hand their latents to an :class:`~ifid_callback.monitor.IFIDMonitor`
    (``training_step`` returns ``{"loss": loss, "latents": posterior.mean.detach()}``, or set the
    monitor's ``latent_source``). Each validation (not the sanity check; also
    ``trainer.validate(ckpt_path=...)`` with the checkpoint's bank) evaluates the monitor and logs
    with ``pl_module.log(..., sync_dist=True)``, so ``ModelCheckpoint``/``EarlyStopping(monitor=
    "val/ifid", mode="min")`` see it; the grid (x | NN(x) | interpolant | reconstruction, titled)
    goes to every TensorBoard, W&B and MLflow logger at the step of those scalars (CSV: none).
    The weights measured are those of ``val/loss``: with Lightning's ``WeightAveraging`` /
    ``EMAWeightAveraging`` the averaged ones, whatever the order of the callbacks. With the
    monitor's ``eval_every_n_steps``, validations before it is due re-log the last values
    (``relog_last``). The monitor's state is saved in checkpoints and restored on resume.

    Args:
        monitor: a ready monitor, or None to build one from ``monitor_kwargs`` (``vae`` defaults
            to ``pl_module.vae``, or the module itself when it has ``encode``/``decode``).
        log_prefix: prefix of the logged names (``"val/"``).
        ifid_name, rfid_name: names of iFID and rFID after the prefix (suffixes such as
            ``_ema`` follow them).
        log_grid: log the image grid at each evaluation (rank 0).
        relog_last: on validations where no evaluation is due, log the last values again.
        prog_bar: show iFID in the progress bar.
        raw_name: with a ``WeightAveraging`` callback, also measure the training weights in each
            validation, logged as ``val/ifid_<raw_name>``, ``val/rfid_<raw_name>``, ...
        **monitor_kwargs: :class:`IFIDMonitor` arguments (``eval_images`` is required).
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
        raw_name: str | None = None,
        **monitor_kwargs: Any,
    ) -> None:
        super().__init__()
        common.check_adapter_arguments("IFIDCallback", monitor, monitor_kwargs)
        if monitor is None and common.knows_vae(monitor_kwargs):
            monitor = IFIDMonitor(**monitor_kwargs)  # a bad setting fails here, not mid-fit
        self.monitor, self.monitor_kwargs = monitor, monitor_kwargs
        self.log_prefix, self.ifid_name, self.rfid_name = log_prefix, ifid_name, rfid_name
        self.log_grid, self.relog_last, self.prog_bar = log_grid, relog_last, prog_bar
        self._pending_state: dict[str, Any] | None = None
        self._window = common.ValidationWindow(relog_last, self.ifid_key, raw_name)

    ifid_key = property(lambda self: f"{self.log_prefix}{self.ifid_name}", doc="``val/ifid``")
    rfid_key = property(lambda self: f"{self.log_prefix}{self.rfid_name}", doc="``val/rfid``")

    @property
    def state_key(self) -> str:
        # Two instances logging under different names keep separate checkpoint entries.
        return self._generate_state_key(ifid=self.ifid_key, rfid=self.rfid_key)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is None:
            self.monitor = common.build_monitor(self.monitor_kwargs, pl_module, "IFIDCallback")
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        common.check_watchers(trainer.callbacks, (self.ifid_name, self.rfid_name))
        loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
        source = getattr(loop, "_data_source", None)  # where fit() takes its validation batches
        defined = source is None or not hasattr(source, "is_defined") or source.is_defined()
        common.check_validation_loop(
            "IFIDCallback",
            self.ifid_key,
            trainer.limit_val_batches != 0,
            is_overridden("validation_step", pl_module) and defined,
        )
        if self.monitor.latent_source == "hook":
            self.monitor.attach()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        common.observe_batch(self.monitor, outputs, batch, trainer.global_step, "training_step")

    # With Lightning's WeightAveraging the averaged weights are in place only between its
    # validation hooks: the window evaluates in the one of ours that falls inside.
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window.start(self.monitor, *self._context(trainer))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        result, fresh = self._window.end(self.monitor, *self._context(trainer))
        if result is None:
            return
        names = {"ifid": self.ifid_name, "rfid": self.rfid_name}
        for key, value in common.logged_metrics(result, self.log_prefix, names).items():
            bar = self.prog_bar and key == self.ifid_key
            pl_module.log(key, value, sync_dist=True, prog_bar=bar)
        if fresh and self.log_grid and trainer.global_rank == 0:
            # The step Lightning's logger connector gives this validation's metrics.
            loop = getattr(trainer.fit_loop, "epoch_loop", None)
            step = int(getattr(loop, "_batches_that_stepped", trainer.global_step))
            log_grids(self.monitor, trainer.loggers, f"{self.ifid_key}_grid", step)

    def _context(self, trainer: Trainer) -> tuple[bool, int | None, bool, bool]:
        fn = trainer.state.fn
        active = not trainer.sanity_checking and fn in ("fit", "validate")
        first = common.precedes(trainer.callbacks, self, _AVERAGING)
        swaps = fn == "fit" and any(isinstance(c, _AVERAGING) for c in trainer.callbacks)
        return active, (None if fn == "validate" else trainer.global_step), first, swaps

    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.monitor is None:  # restored before setup(): applied once the monitor exists
            self._pending_state = dict(state_dict)
        else:
            self.monitor.load_state_dict(state_dict)
