"""Image grids through each logger's own API: TensorBoard, Weights & Biases, MLflow, and the
wrappers of Lightning, Accelerate and the Hugging Face Trainer around them.

Scalars go through each framework's own logging call (``LightningModule.log``,
``Accelerator.log``, the Trainer's metrics), which every logger understands. Images have no
common call, so :func:`log_grid` recognises the targets it knows by their type names (without
importing any framework) and skips the others: a CSV logger gets the scalars and no grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["grid_array", "log_grid", "log_grids"]


def grid_array(grid: Tensor) -> np.ndarray:
    """A (3, H, W) image in [0, 1] as an (H, W, 3) uint8 array (what W&B and PIL take)."""
    return (grid.detach().float().cpu().clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()


def log_grid(target: Any, key: str, grid: Tensor, step: int, step_key: str | None = None) -> bool:
    """Log ``grid`` under ``key`` at ``step`` through ``target``; False when it takes no images.

    Args:
        target: a ``torch.utils.tensorboard.SummaryWriter``; a Lightning ``TensorBoardLogger``,
            ``WandbLogger`` or ``MLFlowLogger``; an Accelerate ``tensorboard``, ``wandb`` or
            ``mlflow`` tracker; a ``wandb`` run; an ``mlflow`` run (``mlflow.active_run()``).
            Anything else (CSV loggers, ...) is skipped. MLflow stores the grid as a PNG
            artifact under ``images/`` with its key and step (``mlflow.log_image(key=, step=)``:
            the run page's image panel steps through the evaluations).
        key: the image's name, e.g. ``"val/ifid_grid"``.
        grid: (3, H, W) float image in [0, 1].
        step: the step of the scalars of the same evaluation.
        step_key: for a raw ``wandb`` run, the metric its charts use as x-axis
            (``"train/global_step"`` for the Hugging Face Trainer); logged with the image.
    """
    kind = type(target).__name__
    if kind == "TensorBoardLogger":
        target = target.experiment
        kind = type(target).__name__
    if kind == "SummaryWriter":
        target.add_image(key, grid, global_step=step)
        return True
    if kind == "WandbLogger":  # Lightning: the same step bookkeeping as its scalars
        target.log_image(key=key, images=[grid_array(grid)], step=step)
        return True
    tracker = getattr(target, "name", None)
    if tracker == "tensorboard" and callable(getattr(target, "log_images", None)):
        target.log_images({key: grid[None].numpy()}, step=step)
        return True
    if tracker == "wandb" and callable(getattr(target, "log_images", None)):
        target.log_images({key: [grid_array(grid)]}, step=step)
        return True
    if kind == "MLFlowLogger":  # Lightning: its client and run (tracking_uri of the logger)
        target.experiment.log_image(target.run_id, grid_array(grid), key=key, step=step)
        return True
    if tracker == "mlflow":  # Accelerate: the run it started with the fluent API
        target = target.tracker
        kind = type(target).__name__
    if kind in ("ActiveRun", "Run") and type(target).__module__.startswith("mlflow"):
        import mlflow

        mlflow.MlflowClient().log_image(target.info.run_id, grid_array(grid), key=key, step=step)
        return True
    if kind == "Run" and type(target).__module__.startswith("wandb"):
        import wandb

        values = {key: wandb.Image(grid_array(grid))}
        if step_key is None:
            target.log(values, step=step)
        else:
            target.log({**values, step_key: step})
        return True
    return False


def log_grids(
    monitor: Any, targets: list[Any], key: str, step: int, step_key: str | None = None
) -> None:
    """Render the monitor's titled grid once and log it to each target that takes images."""
    if targets:
        grid = monitor.render_grid(labels=True)
        for target in targets:
            log_grid(target, key, grid, step, step_key)
