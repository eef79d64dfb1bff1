"""Lightning: train a small KL-VAE and select its checkpoint on iFID.

    python examples/lightning_demo.py                 # ~400 steps on CPU, real Inception FID
    python examples/lightning_demo.py --smoke         # seconds: tiny run, stand-in features
    python examples/lightning_demo.py --ema 0.999     # select on the EMA weights (and log raw)

What a user adds to an existing VAE LightningModule: ``training_step`` also returns the posterior
means under ``"latents"`` (the callback's bank is filled from them at no extra cost), an
``IFIDCallback`` with held-out evaluation images, and ``ModelCheckpoint``/``EarlyStopping`` on
``val/ifid``. With ``--ema`` Lightning's ``EMAWeightAveraging`` keeps averaged weights: val/loss
and val/ifid measure them, and ``raw_name="raw"`` also logs the training weights' val/ifid_raw.
``ifid demo`` is the same with a printed table and more options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from ifid_callback.data import EmbeddedPatches
from ifid_callback.integrations.lightning import IFIDCallback
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig


class LitVAE(pl.LightningModule):
    def __init__(self, base_channels: int = 16, lr: float = 2e-3) -> None:
        super().__init__()
        self.vae = TinyVAE(TinyVAEConfig(base_channels=base_channels))  # the callback finds .vae
        self.lr = lr

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict:
        out = self.vae.loss(batch)  # MSE + KL; out["latents"] = posterior means, detached
        self.log("train/loss", out["loss"])
        return {"loss": out["loss"], "latents": out["latents"]}

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.vae.loss(batch)["loss"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100, help="steps between iFID evaluations")
    p.add_argument("--eval-images", type=int, default=128, help="held-out images per evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/lightning_example"))
    p.add_argument("--ema", type=float, default=None, help="EMA decay, e.g. 0.999 (default: none)")
    p.add_argument("--smoke", action="store_true", help="tiny run with stand-in features (not FID)")
    args = p.parse_args(argv)
    feature = "inception"
    if args.smoke:
        from ifid_callback.demo import SmokeFeatures

        args.max_steps, args.eval_every, args.eval_images = 8, 4, 32
        feature = SmokeFeatures()

    pl.seed_everything(0, verbose=False)
    train = EmbeddedPatches("train", size=32, max_items=64 if args.smoke else None)
    val = EmbeddedPatches("val", size=32)
    eval_images = val.as_tensor()  # the callback picks a seeded subset of num_eval_images

    ifid = IFIDCallback(
        eval_images=eval_images,
        num_eval_images=args.eval_images,
        bank_capacity=4096,  # the last 4096 training latents
        feature=feature,
        raw_name="raw" if args.ema else None,  # the training weights too, as val/ifid_raw
    )
    averaging = [EMAWeightAveraging(decay=args.ema)] if args.ema else []
    best = ModelCheckpoint(monitor="val/ifid", mode="min", save_top_k=1)
    stop = EarlyStopping(monitor="val/ifid", mode="min", patience=3)
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        val_check_interval=args.eval_every,  # validate (and evaluate iFID) every N steps
        check_val_every_n_epoch=None,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(args.out), name=""),
        callbacks=[*averaging, ifid, best, stop],
        accelerator="cpu",
        enable_progress_bar=not args.smoke,
        enable_model_summary=False,
        log_every_n_steps=min(50, args.eval_every),
    )
    trainer.fit(
        LitVAE(),
        DataLoader(train, batch_size=16 if args.smoke else 32, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=64),
    )
    for row in ifid.monitor.history:
        raw = f"  raw iFID {row['ifid_raw']:8.2f}" if "ifid_raw" in row else ""
        print(f"step {row['step']:>5}  rFID {row['rfid']:8.2f}{raw}  iFID {row['ifid']:8.2f}")
    print(f"best checkpoint (val/ifid {float(best.best_model_score):.2f}): {best.best_model_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
