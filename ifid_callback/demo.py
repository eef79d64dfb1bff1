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
This module holds the entry point and the names users import; the options are in
:mod:`ifid_callback.demo_args`, part 1's run in :mod:`ifid_callback.demo_monitor` and its printed
results in :mod:`ifid_callback.demo_report`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ifid_callback.demo_args import build_parser, check_args, load_feature
from ifid_callback.demo_monitor import lightning_classes, run_monitor
from ifid_callback.demo_report import format_table, min_delta_advice

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


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import: its classes are built on first use, so `ifid demo --help`
    # and `import ifid_callback.demo` stay fast. They are cached, so pickling by name works.
    if name in ("VAEModule", "TableRecorder"):
        return lightning_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit status (0 on success)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    check_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        code = 0
        if args.part in ("all", "monitor"):
            if args.part == "all":
                print("Part 1 of 2: training a VAE with iFID monitoring (Lightning)\n")
            code = run_monitor(args)
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


if __name__ == "__main__":
    raise SystemExit(main())
