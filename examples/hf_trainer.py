"""Hugging Face Trainer: iFID as an evaluation metric that picks the best model.

    python examples/hf_trainer.py                   # ~400 steps on CPU, real Inception FID
    python examples/hf_trainer.py --smoke           # seconds: tiny run, stand-in features

``IFIDTrainer`` (or ``IFIDTrainerMixin`` mixed into your Trainer subclass) adds ``eval_ifid`` and
``eval_rfid`` to every evaluation, so they reach ``log_history``, TensorBoard,
``EarlyStoppingCallback`` and ``metric_for_best_model``. Settings that matter:
``metric_for_best_model="eval_ifid"`` with ``greater_is_better=False``, and saves on the
evaluation steps. The model's forward returns ``{"loss", "latents"}``; the callback banks the
latents at no extra cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, TrainingArguments

from ifid_callback.data import EmbeddedPatches
from ifid_callback.integrations.transformers import IFIDTrainer, IFIDTrainerCallback
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig


class VAEForTrainer(nn.Module):
    """The Trainer calls ``model(pixel_values=...)`` and reads ``["loss"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.vae = TinyVAE(TinyVAEConfig(base_channels=16))  # the callback finds .vae

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.vae.loss(pixel_values)
        return {"loss": out["loss"], "latents": out["latents"]}


class PixelValues(Dataset):
    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[i]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    p.add_argument("--eval-images", type=int, default=128, help="held-out images for iFID")
    p.add_argument("--out", type=Path, default=Path("runs/hf_trainer_example"))
    p.add_argument("--smoke", action="store_true", help="tiny run with stand-in features (not FID)")
    args = p.parse_args(argv)
    feature = "inception"
    if args.smoke:
        from ifid_callback.demo import SmokeFeatures

        args.max_steps, args.eval_every, args.eval_images = 8, 4, 32
        feature = SmokeFeatures()

    torch.manual_seed(0)
    train = EmbeddedPatches("train", size=32, max_items=64 if args.smoke else None)
    val = EmbeddedPatches("val", size=32)
    training_args = TrainingArguments(
        output_dir=str(args.out),
        max_steps=args.max_steps,
        per_device_train_batch_size=16 if args.smoke else 32,
        per_device_eval_batch_size=64,
        learning_rate=2e-3,
        eval_strategy="steps",
        eval_steps=args.eval_every,
        save_strategy="steps",  # saves must fall on evaluation steps
        save_steps=args.eval_every,
        save_total_limit=2,
        metric_for_best_model="eval_ifid",
        greater_is_better=False,  # lower iFID is better; the default would keep the worst
        load_best_model_at_end=True,
        report_to=["tensorboard"],
        logging_steps=min(10, args.eval_every),
        use_cpu=True,
        remove_unused_columns=False,
        prediction_loss_only=True,
        disable_tqdm=args.smoke,
    )
    trainer = IFIDTrainer(
        model=VAEForTrainer(),
        args=training_args,
        train_dataset=PixelValues(train),
        eval_dataset=PixelValues(EmbeddedPatches("val", size=32, max_items=128)),
        callbacks=[
            IFIDTrainerCallback(
                eval_images=val.as_tensor(),
                num_eval_images=args.eval_images,
                bank_capacity=4096,
                feature=feature,
            ),
            EarlyStoppingCallback(early_stopping_patience=3),
        ],
    )
    trainer.train()
    for row in trainer.state.log_history:
        if "eval_ifid" in row:
            print(
                f"step {row['step']:>5}  rFID {row['eval_rfid']:8.2f}  iFID {row['eval_ifid']:8.2f}"
            )
    print(
        f"best checkpoint (eval_ifid {trainer.state.best_metric:.2f}): "
        f"{trainer.state.best_model_checkpoint}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
