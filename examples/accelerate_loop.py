"""Accelerate: iFID in a plain training loop, logged to TensorBoard and saved with save_state.

    python examples/accelerate_loop.py              # ~400 steps on CPU, real Inception FID
    python examples/accelerate_loop.py --smoke      # seconds: tiny run, stand-in features
    python examples/accelerate_loop.py --ema 0.999  # iFID of EMA weights (val/ifid) and raw ones
    accelerate launch --num_processes 2 examples/accelerate_loop.py   # the bank is gathered,
                                                                      # the evaluation sharded

Accelerate has no callbacks: each step hands the latents it already computed to the monitor
(``observe``), and ``maybe_evaluate`` computes iFID/rFID every ``eval_every_n_steps`` steps and
logs them through ``accelerator.log``. Every process must make both calls at the same steps.
With ``--ema`` a ``torch.optim.swa_utils.AveragedModel`` keeps EMA weights: ``eval_vae`` makes
val/ifid measure them and ``extra_vaes={"raw": ...}`` adds val/ifid_raw from the same evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ifid_callback import IFIDMonitor
from ifid_callback.data import EmbeddedPatches
from ifid_callback.integrations.accelerate import AccelerateIFID
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig


class VAEWithLoss(torch.nn.Module):
    """forward() computes the loss, so the prepared (DDP-wrapped) model syncs its gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.vae = TinyVAE(TinyVAEConfig(base_channels=16))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vae.loss(images)  # {"loss", "recon", "kl", "latents" (posterior means)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100, help="steps between iFID evaluations")
    p.add_argument("--eval-images", type=int, default=128, help="held-out images per evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/accelerate_example"))
    p.add_argument("--ema", type=float, default=None, help="EMA decay, e.g. 0.999 (default: none)")
    p.add_argument("--smoke", action="store_true", help="tiny run with stand-in features (not FID)")
    args = p.parse_args(argv)
    feature = "inception"
    if args.smoke:
        from ifid_callback.demo import SmokeFeatures

        args.max_steps, args.eval_every, args.eval_images = 8, 4, 32
        feature = SmokeFeatures()

    set_seed(0)
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(args.out))
    accelerator.init_trackers("ifid")
    model = VAEWithLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    train = EmbeddedPatches("train", size=32, max_items=64 if args.smoke else None)
    loader = DataLoader(train, batch_size=16 if args.smoke else 32, shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    vae = accelerator.unwrap_model(model).vae
    weights = {}
    if args.ema:
        ema = AveragedModel(vae, multi_avg_fn=get_ema_multi_avg_fn(args.ema))
        weights = dict(eval_vae=ema, extra_vaes={"raw": vae})  # val/ifid: EMA; val/ifid_raw
    monitor = IFIDMonitor(
        vae,
        eval_images=EmbeddedPatches("val", size=32).as_tensor(),  # held out: no shared pixels
        num_eval_images=args.eval_images,
        eval_every_n_steps=args.eval_every,
        bank_capacity=4096,
        feature=feature,
        **weights,
    )
    ifid = AccelerateIFID(monitor, accelerator)  # logs val/ifid, val/rfid and the grid

    step = 0
    while step < args.max_steps:
        for images in loader:
            out = model(images)  # MSE + KL, and the latents
            optimizer.zero_grad()
            accelerator.backward(out["loss"])
            optimizer.step()
            if args.ema:
                ema.update_parameters(vae)
            step += 1
            accelerator.log({"train/loss": out["loss"].item()}, step=step)
            ifid.observe(latents=out["latents"], step=step)
            result = ifid.maybe_evaluate(step)
            if result is not None:
                raw = f"  raw iFID {result['ifid_raw']:8.2f}" if args.ema else ""
                accelerator.print(
                    f"step {step:>5}  loss {out['loss'].item():.4f}  "
                    f"rFID {result['rfid']:8.2f}{raw}  iFID {result['ifid']:8.2f}"
                )
            if step == args.max_steps:
                break

    accelerator.save_state(str(args.out / "state"))  # model, optimizer and the iFID monitor
    accelerator.end_training()
    accelerator.print(f"TensorBoard logs and state in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
