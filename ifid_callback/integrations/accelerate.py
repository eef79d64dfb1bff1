"""iFID in a plain Accelerate training loop: log through the Accelerator's trackers, checkpoint
with ``save_state``.

Accelerate has no callbacks; the loop calls the monitor itself::

    monitor = IFIDMonitor(vae, eval_images=val_images, eval_every_n_steps=1000)
    ifid = AccelerateIFID(monitor, accelerator)       # registers the monitor for save_state
    for step, batch in enumerate(loader, 1):
        out = vae_loss(batch); accelerator.backward(out["loss"]); optimizer.step()
        ifid.observe(latents=out["latents"], step=step)
        ifid.maybe_evaluate(step)                    # every rank; logs on the main process

Every rank must call ``observe``/``maybe_evaluate`` at the same steps (the bank is gathered and
the evaluation is sharded across processes).
"""

from __future__ import annotations

import warnings
from typing import Any

from accelerate import Accelerator

from ifid_callback.integrations.common import logged_metrics
from ifid_callback.integrations.loggers import log_grid
from ifid_callback.monitor import IFIDMonitor

__all__ = ["AccelerateIFID", "log_metrics"]


def log_metrics(
    accelerator: Accelerator,
    result: dict[str, float],
    step: int,
    log_prefix: str = "val/",
    grid: Any = None,
) -> None:
    """Log every number of ``result`` with ``accelerator.log`` and an optional (3, H, W) grid to
    each tracker that takes images (TensorBoard, W&B, MLflow), at ``step``; main process only."""
    accelerator.log(logged_metrics(result, log_prefix), step=step)
    if grid is None or not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        log_grid(tracker, f"{log_prefix}ifid_grid", grid, step)


class AccelerateIFID:
    """Thin glue between an :class:`~ifid_callback.monitor.IFIDMonitor` and an ``Accelerator``.

    The monitor is registered with ``accelerator.register_for_checkpointing``, so
    ``accelerator.save_state``/``load_state`` carry its bank, counters, cached real statistics
    and history (register before ``load_state``, in the same order on save and load). The first
    evaluation warns (once) when the accelerator has no initialised tracker (then
    ``accelerator.log`` writes nothing).

    Args:
        monitor: the monitor to drive (its VAE should be the prepared model's VAE).
        accelerator: the loop's ``Accelerator``; metrics go to its trackers.
        log_prefix: prefix of the logged names (``"val/ifid"``, ``"val/rfid"``, ...).
        log_grid: log the titled image grid to the TensorBoard/W&B/MLflow trackers at each
            evaluation.
        register: register the monitor for checkpointing (False when done elsewhere).
    """

    def __init__(
        self,
        monitor: IFIDMonitor,
        accelerator: Accelerator,
        *,
        log_prefix: str = "val/",
        log_grid: bool = True,
        register: bool = True,
    ) -> None:
        if not isinstance(monitor, IFIDMonitor):
            raise TypeError(f"monitor must be an IFIDMonitor, got {type(monitor).__name__}.")
        if not isinstance(accelerator, Accelerator):
            raise TypeError(
                f"accelerator must be an accelerate.Accelerator, got {type(accelerator).__name__}."
            )
        self.monitor, self.accelerator = monitor, accelerator
        self.log_prefix, self.log_grid = log_prefix, log_grid
        self._warned_no_tracker = False
        if register:
            accelerator.register_for_checkpointing(monitor)

    def observe(self, *args: Any, **kwargs: Any) -> int:
        """:meth:`IFIDMonitor.observe` (call on every rank, every step)."""
        return self.monitor.observe(*args, **kwargs)

    def maybe_evaluate(self, step: int) -> dict[str, float] | None:
        """Evaluate when due (every rank) and log on the main process; returns the metrics."""
        if not self.monitor.due(step):
            if self.monitor.eval_every_n_steps is None:
                self.monitor.maybe_evaluate(step)  # raises the explanation
            return None
        return self.evaluate(step)

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate now (every rank) and log the metrics (and grid) on the main process."""
        result = self.monitor.evaluate(step)
        accelerator = self.accelerator
        if accelerator.is_main_process and not accelerator.trackers:
            self._warn_nothing_logs()
        grid = None
        if self.log_grid and accelerator.is_main_process and accelerator.trackers:
            grid = self.monitor.render_grid(labels=True)
        log_metrics(accelerator, result, step, self.log_prefix, grid)
        return result

    def _warn_nothing_logs(self) -> None:
        if self._warned_no_tracker:
            return
        self._warned_no_tracker = True
        requested = self.accelerator.log_with
        how = (
            f"log_with={[str(getattr(t, 'value', t)) for t in requested]} was requested but "
            "accelerator.init_trackers(...) was not called"
            if requested
            else "the Accelerator has no log_with"
        )
        warnings.warn(
            f"accelerator.log writes nothing: {how}, so val/ifid and val/rfid reach no logger. "
            "Use Accelerator(log_with='tensorboard', project_dir=...) and call "
            "accelerator.init_trackers('run_name') before training (the metrics are still "
            "returned by evaluate()).",
            UserWarning,
            stacklevel=3,
        )
