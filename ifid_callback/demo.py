"""The demo behind ``make demo``: train a small KL-VAE with iFID monitoring in Lightning, on CPU.

A :class:`~ifid_callback.tiny_vae.TinyVAE` learns to reconstruct photo patches shipped inside
installed packages (:class:`~ifid_callback.data.EmbeddedPatches`), or the images of a folder given
with ``--data``. The Lightning ``IFIDCallback`` keeps a rolling bank of the training latents and,
at every validation, logs ``val/ifid`` and ``val/rfid`` (standard Inception FID, offline weights)
and an interpolation grid to TensorBoard; ``ModelCheckpoint(monitor="val/ifid", mode="min")``
keeps the best checkpoint. At the end a table of step, loss, rFID, iFID with its standard error and
PSNR is printed, with the early-stopping ``min_delta`` those standard errors recommend.

Part 2 (:mod:`ifid_callback.demo_pair`) then trains two small VAEs on embedded digits, each with
a SiT diffusion probe, and shows whether iFID sees what the probe's gFID sees where rFID cannot.
``--part monitor`` or ``--part pair`` runs one part alone.

Run it with ``ifid demo`` (``--help`` lists the options) or ``python -m ifid_callback.demo``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "SmokeFeatures",
    "TableRecorder",  # noqa: F822 (built on first use, see __getattr__)
    "VAEModule",  # noqa: F822
    "build_parser",
    "format_table",
    "load_feature",
    "main",
    "min_delta_advice",
    "smoke_features",
]


# --------------------------------------------------------------------------------------------
# A cheap stand-in feature network (smoke runs and tests; its numbers are not FID)
# --------------------------------------------------------------------------------------------


class SmokeFeatures(nn.Module):
    """A fixed random projection of 4x4-pooled images: (B, C, H, W) -> (B, num_features).

    Thousands of times cheaper than Inception, deterministic given ``seed``, and accepts any image
    size. Distances computed on it are *not* FID; use it only to check that a pipeline runs
    (``--smoke`` in the examples, the test suite).

    Args:
        num_features: output dimension d.
        channels: image channels C (grey images are repeated to C when C == 3).
        seed: seed of the projection.
    """

    def __init__(self, num_features: int = 32, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        in_dim = channels * 16
        self.register_buffer("weight", torch.randn(in_dim, num_features, generator=g) / in_dim**0.5)
        self.num_features = num_features
        self.channels = channels

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1 and self.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        pooled = F.adaptive_avg_pool2d(images.float(), 4).flatten(1)
        return torch.tanh(pooled @ self.weight.to(pooled.device))


def smoke_features() -> SmokeFeatures:
    """Factory for ``--feature ifid_callback.demo:smoke_features`` (a 32-d :class:`SmokeFeatures`)."""
    return SmokeFeatures()


# --------------------------------------------------------------------------------------------
# Lightning pieces
# --------------------------------------------------------------------------------------------


def _lightning() -> Any:
    try:
        import lightning.pytorch as pl
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The demo needs Lightning and TensorBoard: pip install 'ifid-callback[lightning]'."
        ) from exc
    return pl


_LIGHTNING_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import: build its classes on first use, so `ifid demo --help`
    # and `import ifid_callback.demo` stay fast. The classes are cached, so pickling by name works.
    if name in ("VAEModule", "TableRecorder"):
        if not _LIGHTNING_CLASSES:
            _LIGHTNING_CLASSES.update(_build_lightning_classes())
        return _LIGHTNING_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_lightning_classes() -> dict[str, type]:
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
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"VAEModule": VAEModule, "TableRecorder": TableRecorder}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class _TensorImages(Dataset):
    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def _load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The demo's options (``ifid demo --help``)."""
    p = argparse.ArgumentParser(
        prog="ifid demo",
        description="Train a small convolutional KL-VAE with iFID monitoring (Lightning). "
        "Defaults: embedded photo patches, CPU, a few minutes including the Inception "
        "evaluations. Logs go to TensorBoard; the best checkpoint is selected on val/ifid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--max-steps", type=int, default=400, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=32, help="images per training batch")
    g.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    g.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL term")
    g.add_argument(
        "--base-channels", type=int, default=16, help="VAE width (first conv stage; doubles twice)"
    )
    g.add_argument("--latent-channels", type=int, default=4, help="channels of the latent map")
    g.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs to train on (0: CPU; more than 1: DDP, the evaluation sharded across ranks)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of torch (0: torch's default, one per core). One thread is the robust "
        "choice on a shared machine, where idle-waiting threads cost several times the work",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation, data order, eval set"
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a folder of your own images (PNG/JPEG, recursive) instead of the embedded photos; "
        "resized to --size and center-cropped, a seeded --val-fraction held out",
    )
    d.add_argument("--size", type=int, default=32, help="image side in pixels (multiple of 4)")
    d.add_argument(
        "--val-fraction", type=float, default=0.1, help="with --data: fraction held out for val"
    )
    d.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    m = p.add_argument_group("iFID monitoring")
    m.add_argument(
        "--evals",
        type=int,
        default=4,
        help="number of iFID evaluations, evenly spaced over --max-steps",
    )
    m.add_argument(
        "--eval-images",
        type=int,
        default=128,
        help="held-out images per evaluation (real statistics computed once); each evaluation "
        "runs Inception on 2x this many decodes, ~5 images/s on 2 CPU cores",
    )
    m.add_argument(
        "--bank-size", type=int, default=4096, help="training latents kept in the rolling bank"
    )
    m.add_argument(
        "--interpolation", choices=("slerp", "linear", "mask"), default="slerp", help="iFID mixing"
    )
    m.add_argument("--alpha", type=float, default=0.5, help="iFID interpolation weight")
    m.add_argument(
        "--feature",
        default="inception",
        help="'inception' (standard FID, offline weights) or 'package.module:factory' returning "
        "an nn.Module images -> (B, d); 'ifid_callback.demo:smoke_features' is a cheap stand-in "
        "whose numbers are not FID",
    )
    q = p.add_argument_group("part 2: two VAEs and a diffusion probe on each (digits)")
    q.add_argument(
        "--part",
        choices=("all", "monitor", "pair"),
        default="all",
        help="'monitor': only part 1 (the Lightning training with iFID monitoring); 'pair': only "
        "part 2 (two digit VAEs, a diffusion probe on each; about 2 minutes on 2 cores)",
    )
    q.add_argument(
        "--pair-workers",
        type=int,
        default=2,
        help="processes for part 2 (the two VAEs and their probes train side by side)",
    )
    q.add_argument(
        "--pair-smoke",
        action="store_true",
        help="part 2 with tiny training budgets: checks that it runs; its numbers mean nothing",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="TensorBoard logs and checkpoints"
    )
    o.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bar")
    return p


def load_feature(spec: str) -> str | nn.Module:
    """Resolve a ``--feature`` option: ``"inception"`` as is, ``"package.module:factory"`` to the
    ``nn.Module`` that the factory returns (or the module object named)."""
    if spec == "inception":
        return spec
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"--feature must be 'inception' or 'package.module:factory', got {spec!r}."
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot import {attr!r} from {module_name!r} ({exc}).") from exc
    feature = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if not isinstance(feature, nn.Module):
        raise TypeError(
            f"--feature {spec} gave a {type(feature).__name__}; it must be (or return) an "
            "nn.Module mapping images (B, C, H, W) to features (B, d)."
        )
    return feature


def _check_args(args: argparse.Namespace) -> None:
    if args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}.")
    if not 1 <= args.evals <= args.max_steps:
        raise ValueError(f"--evals must lie in [1, --max-steps], got {args.evals}.")
    if args.size % 4:
        raise ValueError(f"--size must be a multiple of 4 (two 2x downsamplings), got {args.size}.")
    if args.eval_images < 4:
        raise ValueError(f"--eval-images must be >= 4, got {args.eval_images}.")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}.")
    if args.gpus < 0:
        raise ValueError(f"--gpus must be >= 0, got {args.gpus}.")
    if args.pair_workers < 1:
        raise ValueError(f"--pair-workers must be >= 1, got {args.pair_workers}.")
    if args.gpus > 0 and torch.cuda.device_count() < args.gpus:
        raise ValueError(
            f"--gpus {args.gpus} asked for, {torch.cuda.device_count()} CUDA devices visible; "
            "use --gpus 0 to train on the CPU."
        )


def format_table(rows: Sequence[dict[str, float]], best_step: int | None = None) -> str:
    """The demo's results as a fixed-width text table, one row per evaluation.

    Args:
        rows: dicts with ``step``, ``loss`` (mean training loss since the previous row),
            ``val_loss``, ``rfid``, ``ifid`` and optionally ``ifid_std`` (its standard error,
            shown as +-), ``psnr`` (dB) and ``eval_seconds`` (wall time of the validation,
            Inception included).
        best_step: the row to mark as the best checkpoint.
    """
    lines = [
        f"{'step':>6}  {'train loss':>10}  {'val loss':>9}  {'rFID':>8}  {'iFID +- SE':>15}  "
        f"{'PSNR dB':>7}  {'eval s':>6}",
        f"{'-' * 6}  {'-' * 10}  {'-' * 9}  {'-' * 8}  {'-' * 15}  {'-' * 7}  {'-' * 6}",
    ]
    for row in rows:
        mark = "  <- best val/ifid" if best_step is not None and row["step"] == best_step else ""
        ifid = f"{row['ifid']:.2f} +- {row.get('ifid_std', math.nan):.2f}"
        lines.append(
            f"{int(row['step']):>6}  {row['loss']:>10.4f}  {row['val_loss']:>9.4f}  "
            f"{row['rfid']:>8.2f}  {ifid:>15}  {row.get('psnr', math.nan):>7.2f}  "
            f"{row.get('eval_seconds', math.nan):>6.0f}{mark}"
        )
    return "\n".join(lines)


def min_delta_advice(rows: Sequence[dict[str, float]]) -> str | None:
    """A line recommending an early-stopping ``min_delta`` for val/ifid from the rows' standard
    errors (:func:`~ifid_callback.functional.recommend_min_delta`), or None without them."""
    from ifid_callback.functional import recommend_min_delta

    pairs = [
        (row["ifid"], row["ifid_std"])
        for row in rows
        if math.isfinite(row.get("ifid", math.nan)) and math.isfinite(row.get("ifid_std", math.nan))
    ]
    if not pairs:
        return None
    delta = recommend_min_delta(pairs)
    return (
        f"iFID differences below {delta:.2f} are within the sampling noise of these evaluations "
        f"(2 sqrt(2) x the median SE): early-stop with EarlyStopping(monitor='val/ifid', "
        f"mode='min', min_delta={delta:.2f})."
    )


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet() -> None:
    """Keep the demo's console to what matters: the caveat below is printed with the table."""
    warnings.filterwarnings("ignore", message=r".*evaluation images but the features are")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit status (0 on success)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    _check_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        code = 0
        if args.part in ("all", "monitor"):
            if args.part == "all":
                print("Part 1 of 2: training a VAE with iFID monitoring (Lightning)\n")
            code = _run(args)
        if code == 0 and args.part in ("all", "pair") and _is_rank_zero():
            if args.part == "all":
                print(
                    "\nPart 2 of 2: two VAEs, and a diffusion probe that says which latents generate better\n"
                )
            code = _run_pair(args)
        return code
    finally:
        torch.set_num_threads(threads)


def _is_rank_zero() -> bool:
    # Under DDP every rank runs main(); part 2 is a single-process job for rank 0 alone.
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def _run_pair(args: argparse.Namespace) -> int:
    """Part 2: the committed check's pair at ``--seed``, printed with its noise and verdict."""
    from ifid_callback.demo_pair import run_demo_pair

    return run_demo_pair(
        seed=args.seed, out=args.out / "pair", workers=args.pair_workers, smoke=args.pair_smoke
    )


def _run(args: argparse.Namespace) -> int:
    pl = _lightning()
    _quiet()
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    start = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    train, val, description = _load_data(args)
    print(f"data: {description}")
    eval_images = _stack(val, args.eval_images, args.seed)
    if len(eval_images) < args.eval_images:
        print(f"note: only {len(eval_images)} held-out images for the iFID evaluation")

    module = __getattr__("VAEModule")(
        base_channels=args.base_channels,
        latent_channels=args.latent_channels,
        lr=args.lr,
        kl_weight=args.kl_weight,
    )
    interval = max(1, args.max_steps // args.evals)
    ifid_cb = _make_ifid_callback(args, eval_images)
    table = __getattr__("TableRecorder")()
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

    best_step = None
    best_score = checkpoint.best_model_score
    if best_score is not None and table.rows:
        best_step = min(table.rows, key=lambda r: abs(r["ifid"] - float(best_score)))["step"]
    grid_path = _save_grid(ifid_cb, Path(logger.log_dir))
    minutes = (time.perf_counter() - start) / 60
    print()
    print(
        f"iFID and rFID on {len(eval_images)} held-out images ({args.feature} features); "
        f"neighbours from a rolling bank of up to {args.bank_size} training latents; "
        f"{args.interpolation}, alpha={args.alpha}."
    )
    if args.feature == "inception" and len(eval_images) < 2048:
        print(
            f"FID from {len(eval_images)} images (fewer than the 2048 feature dimensions) is biased "
            "upwards: compare the rows with each other, not with published FIDs."
        )
    print(format_table(table.rows, best_step))
    advice = min_delta_advice(table.rows)
    if advice is not None:
        print(advice)
    print()
    if checkpoint.best_model_path:
        print(
            f"best checkpoint (lowest val/ifid = {float(best_score):.2f}): "
            f"{checkpoint.best_model_path}"
        )
    print(f"TensorBoard logs: {logger.log_dir}   (view: tensorboard --logdir {args.out})")
    if grid_path is not None:
        print(f"interpolation grid (x | NN(x) | interpolant | reconstruction): {grid_path}")
    print(f"{'part 1 took' if args.part == 'all' else 'total time:'} {minutes:.1f} min")
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


if __name__ == "__main__":
    raise SystemExit(main())
