"""The demo's command line: its options, their checks, and the ``--feature`` resolver."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["build_parser", "check_args", "load_feature"]


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
        "--interpolation",
        choices=("slerp", "linear", "mask", "mask_top_half"),
        default="slerp",
        help="iFID mixing",
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


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the first option out of its range (or asking for absent GPUs)."""
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
