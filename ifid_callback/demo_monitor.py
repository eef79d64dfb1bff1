"""Part 1 of the demo: train a small KL-VAE in Lightning with iFID monitoring, on CPU or GPUs.

The LightningModule and the callback that records the table, the demo's data (embedded photo
patches or a folder), and the training run itself; :mod:`ifid_callback.demo_report` prints what
it measured.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ifid_callback.demo_args import load_feature
from ifid_callback.demo_report import print_summary

__all__ = ["lightning_classes", "load_data", "run_monitor"]


def _lightning() -> Any:
    try:
        import lightning.pytorch as pl
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The demo needs Lightning and TensorBoard: pip install 'ifid-callback[lightning]'."
        ) from exc
    return pl


@cache
def lightning_classes() -> dict[str, type]:
    """``{"VAEModule": ..., "TableRecorder": ...}``, built once per process on first use.

    Lightning takes seconds to import, so the classes that subclass its types are made here only
    when a demo run (or a user) asks for them.
    """
    pl = _lightning()

    class VAEModule(pl.LightningModule):
        """LightningModule around :class:`~ifid_callback.tiny_vae.TinyVAE`.

        ``training_step`` returns ``{"loss", "latents"}``: the posterior means of the batch,
        detached, so the iFID callback fills its bank at no extra encoder cost. Logged:
        ``train/loss``, ``train/recon``, ``train/kl`` every step and ``val/loss`` per validation.
        Batches are image tensors (B, 3, H, W) in [-1, 1], H and W divisible by 4.

        Args:
            base_channels: width of the first conv stage of the VAE.
            latent_channels: channels of the latent map (the map is (H / 4) x (W / 4)).
            lr: AdamW learning rate.
            kl_weight: weight of the KL term per latent value (loss = MSE + kl_weight * KL).
        """

        def __init__(
            self,
            base_channels: int = 16,
            latent_channels: int = 4,
            lr: float = 2e-3,
            kl_weight: float = 1e-4,
        ) -> None:
            super().__init__()
            from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

            self.save_hyperparameters()
            self.vae = TinyVAE(
                TinyVAEConfig(latent_channels=latent_channels, base_channels=base_channels)
            )

        # encode/decode make the module itself a VAE that the metric can drive.
        def encode(self, x: Tensor) -> Any:
            return self.vae.encode(x)

        def decode(self, z: Tensor) -> Tensor:
            return self.vae.decode(z)

        def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
            out = self.vae.loss(batch, kl_weight=self.hparams.kl_weight)
            self.log("train/loss", out["loss"], prog_bar=True)
            self.log("train/recon", out["recon"])
            self.log("train/kl", out["kl"])
            return {"loss": out["loss"], "latents": out["latents"]}

        def validation_step(self, batch: Tensor, batch_idx: int) -> None:
            out = self.vae.loss(batch, kl_weight=self.hparams.kl_weight)
            self.log("val/loss", out["loss"], prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.0)

    class TableRecorder(pl.Callback):
        """Rows of (step, mean training loss since the last row, val loss, rFID, iFID and its
        standard error, PSNR, seconds spent in that validation)."""

        def __init__(self, ifid_key: str = "val/ifid", rfid_key: str = "val/rfid") -> None:
            self.ifid_key, self.rfid_key = ifid_key, rfid_key
            prefix = ifid_key.rpartition("/")[0]
            self.std_key = f"{ifid_key}_std"
            self.psnr_key = f"{prefix}/psnr" if prefix else "psnr"
            self.rows: list[dict[str, float]] = []
            self._loss_sum, self._loss_count = 0.0, 0
            self._val_start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._loss_sum += float(loss.detach())
            self._loss_count += 1

        def on_validation_start(self, trainer, pl_module) -> None:
            self._val_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            # After the epoch-end hooks: the callback's val/ifid is in callback_metrics by now.
            if trainer.sanity_checking:
                return
            metrics = trainer.callback_metrics

            def get(key: str) -> float:
                return float(metrics[key]) if key in metrics else math.nan

            self.rows.append(
                {
                    "step": trainer.global_step,
                    "loss": self._loss_sum / max(self._loss_count, 1),
                    "val_loss": get("val/loss"),
                    "rfid": get(self.rfid_key),
                    "ifid": get(self.ifid_key),
                    "ifid_std": get(self.std_key),
                    "psnr": get(self.psnr_key),
                    "eval_seconds": time.perf_counter() - self._val_start,
                }
            )
            self._loss_sum, self._loss_count = 0.0, 0

    for cls in (VAEModule, TableRecorder):
        # Their public home: pickles name them there, and ifid_callback.demo resolves the names.
        cls.__module__, cls.__qualname__ = "ifid_callback.demo", cls.__name__
    return {"VAEModule": VAEModule, "TableRecorder": TableRecorder}


class _TensorImages(Dataset):
    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
    """(train, val, description) from the embedded photos or from ``--data``."""
    if args.data is None:
        from ifid_callback.data import EmbeddedPatches

        train = EmbeddedPatches("train", size=args.size)
        val = EmbeddedPatches("val", size=args.size)
        return train, val, f"{train.describe()}; val: {len(val)} patches (no shared pixels)"
    from ifid_callback.data import ImageFolder

    folder = ImageFolder(args.data, size=args.size)
    n = len(folder)
    n_val = max(2, round(n * args.val_fraction))
    if n - n_val < args.batch_size:
        raise ValueError(
            f"{args.data} holds {n} images: too few for a validation split of {n_val} and "
            f"batches of {args.batch_size}; add images or lower --batch-size / --val-fraction."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    train, val = Subset(folder, order[n_val:]), Subset(folder, order[:n_val])
    desc = f"{n} images from {args.data} resized to {args.size}x{args.size}: {n - n_val} train, {n_val} val"
    return train, val, desc


def _stack(dataset: Dataset, count: int, seed: int) -> Tensor:
    """``count`` items of ``dataset``, a seeded random choice in random order, as one tensor.

    Random order, so that the first rows (those of the image grid) come from different photos.
    """
    count = min(count, len(dataset))
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([dataset[int(i)] for i in pick])


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet() -> None:
    """Keep the demo's console to what matters: the small-sample caveat is printed with the table."""
    warnings.filterwarnings("ignore", message=r".*evaluation images but the features are")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())


def run_monitor(args: argparse.Namespace) -> int:
    """Part 1: train, evaluate and print; returns the exit status (0 on success)."""
    pl = _lightning()
    _quiet()
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    start = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    train, val, description = load_data(args)
    print(f"data: {description}")
    eval_images = _stack(val, args.eval_images, args.seed)
    if len(eval_images) < args.eval_images:
        print(f"note: only {len(eval_images)} held-out images for the iFID evaluation")

    module = lightning_classes()["VAEModule"](
        base_channels=args.base_channels,
        latent_channels=args.latent_channels,
        lr=args.lr,
        kl_weight=args.kl_weight,
    )
    interval = max(1, args.max_steps // args.evals)
    ifid_cb = _make_ifid_callback(args, eval_images)
    table = lightning_classes()["TableRecorder"]()
    logger = TensorBoardLogger(save_dir=str(args.out), name="", default_hp_metric=False)
    checkpoint = ModelCheckpoint(
        monitor="val/ifid",
        mode="min",
        save_top_k=1,
        filename="step{step}-ifid{val/ifid:.2f}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        accelerator="gpu" if args.gpus else "cpu",
        devices=args.gpus if args.gpus else 1,
        strategy="ddp" if args.gpus > 1 else "auto",
        val_check_interval=interval,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=4,
        logger=logger,
        callbacks=[ifid_cb, table, checkpoint],
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    loader_kwargs = {"batch_size": args.batch_size, "num_workers": args.workers}
    train_loader = DataLoader(
        train,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
        persistent_workers=args.workers > 0,
        **loader_kwargs,
    )
    val_images = _stack(val, 4 * args.batch_size, args.seed + 1)
    val_loader = DataLoader(_TensorImages(val_images), **loader_kwargs)
    trainer.fit(module, train_loader, val_loader)
    if not trainer.is_global_zero:
        return 0

    best_score = checkpoint.best_model_score
    print_summary(
        args,
        len(eval_images),
        table.rows,
        float(best_score) if best_score is not None else None,
        checkpoint.best_model_path,
        logger.log_dir,
        _save_grid(ifid_cb, Path(logger.log_dir)),
        (time.perf_counter() - start) / 60,
    )
    return 0


def _make_ifid_callback(args: argparse.Namespace, eval_images: Tensor) -> Any:
    """The Lightning IFIDCallback: bank of training latents, evaluation on held-out images."""
    from ifid_callback.integrations.lightning import IFIDCallback

    return IFIDCallback(
        eval_images=eval_images,
        bank_capacity=args.bank_size,
        feature=load_feature(args.feature),
        interpolation=args.interpolation,
        alpha=args.alpha,
        eval_batch_size=32,
        grid_rows=8,
        seed=args.seed,
    )


def _save_grid(callback: Any, log_dir: Path) -> Path | None:
    """Write the final model's interpolation grid as a PNG next to the TensorBoard logs."""
    from ifid_callback.grid import save_png

    monitor = getattr(callback, "monitor", None)
    if monitor is None or len(monitor.bank) == 0:
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "ifid_grid.png"
    save_png(monitor.render_grid(), path, scale=2)
    return path
