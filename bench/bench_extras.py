"""Cost of each evaluation extra against one plain Fréchet distance, on held 2048-d features.

An evaluation of N queries holds N real, N interpolant and N reconstruction feature rows. The unit
is one plain Fréchet distance from held statistics (``frechet_distance``, what iFID or rFID costs
once the sums are accumulated; an evaluation computes two). Each extra is timed on the same rows:

- influence / jackknife: standard errors of iFID and rFID together (``frechet_influence``;
  ``frechet_jackknife`` with G groups)
- KID: KID of interpolants and reconstructions together (``kernel_inception_distances``)
- precision/recall: of the interpolants against the real images (``precision_recall``, k=3)
- PSNR/MSE and PSNR/SSIM/MSE: of N reconstructions at --image-size (``reconstruction_sums``,
  batches of 32, float32 images; a few batches timed and scaled to N, the cost being linear)

Features are synthetic (non-negative, correlated, like Inception pool3); times do not depend on
their values. Usage: python bench/bench_extras.py [--sizes 500 2000] [--threads 1] [--groups 20]
[--subsets 100] [--image-size 256] [--feature-space]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback.functional import (  # noqa: E402
    frechet_distance,
    frechet_influence,
    frechet_jackknife,
    kernel_inception_distances,
    precision_recall,
    reconstruction_sums,
    sample_space_frechet_distance,
    statistics_of,
)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls (no warm-up call: each one is long)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def features(n: int, d: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    mix = torch.randn(256, d, generator=g) / 16
    real = torch.randn(n, 256, generator=g)
    recon = real + 0.3 * torch.randn(n, 256, generator=g)
    interp = 0.7 * real + 0.7 * torch.randn(n, 256, generator=g)
    return {
        k: torch.relu(v @ mix).to(torch.float64)
        for k, v in (("real", real), ("recon", recon), ("interp", interp))
    }


def bench_size(n: int, args: argparse.Namespace) -> None:
    """Time each extra at N = n and print it next to the plain distance."""
    f = features(n, args.dim, torch.Generator().manual_seed(n))
    stats_real, stats_interp = statistics_of(f["real"]), statistics_of(f["interp"])
    unit = timed(lambda: frechet_distance(*stats_real, *stats_interp), args.repeats)
    fakes = {"ifid": f["interp"], "rfid": f["recon"]}
    kid_fakes = {"ikid": f["interp"], "rkid": f["recon"]}
    size = min(1000, n)
    jobs: list[tuple[str, Callable[[], object]]] = [
        (
            "sample-space Fréchet distance (1 set)",
            lambda: sample_space_frechet_distance(f["real"], f["interp"]),
        ),
        (
            "influence SE, iFID+rFID (infinitesimal jackknife)",
            lambda: frechet_influence(f["real"], fakes),
        ),
        (
            f"jackknife SE, iFID+rFID (G={args.groups}, sample space)",
            lambda: frechet_jackknife(f["real"], fakes, args.groups, space="sample"),
        ),
    ]
    if args.feature_space:
        jobs.append(
            (
                f"jackknife SE, iFID+rFID (G={args.groups}, feature space)",
                lambda: frechet_jackknife(f["real"], fakes, args.groups, space="feature"),
            )
        )
    jobs.append(
        (
            f"KID, interp+recon ({args.subsets} subsets of {size})",
            lambda: kernel_inception_distances(f["real"], kid_fakes, args.subsets, size),
        )
    )
    jobs.append(
        ("precision/recall, interp (k=3)", lambda: precision_recall(f["real"], f["interp"]))
    )
    g = torch.Generator().manual_seed(0)
    shape = (32, 3, args.image_size, args.image_size)
    target = torch.rand(shape, generator=g) * 2 - 1
    recon = (target + 0.1 * torch.randn(shape, generator=g)).clamp(-1, 1)

    # Linear in N: time --recon-batches batches of 32 and scale to N images.
    batches = min(args.recon_batches, -(-n // 32))
    scale = -(-n // 32) / batches

    def recon_metrics(ssim: bool) -> None:
        for _ in range(batches):
            reconstruction_sums(recon, target, ssim=ssim)

    px = args.image_size
    note = "" if scale == 1 else f", x{scale:.1f} from {batches} batches"
    jobs.append((f"PSNR/MSE, {n} recons at {px}px{note}", lambda: recon_metrics(False)))
    jobs.append((f"PSNR/SSIM/MSE, {n} recons at {px}px{note}", lambda: recon_metrics(True)))
    print(f"\nN={n}: plain Fréchet distance {unit:.3f} s (= 1.00x; iFID+rFID = 2.00x)", flush=True)
    for name, job in jobs:
        seconds = timed(job, 1) * (scale if name.startswith("PSNR") else 1.0)
        print(f"  {name:<60s} {seconds:8.3f} s  {seconds / unit:6.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="for the plain distance")
    parser.add_argument("--recon-batches", type=int, default=4, help="batches of 32 timed")
    parser.add_argument(
        "--feature-space", action="store_true", help="also time the jackknife in d-space"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), d={args.dim}, CPU float64")
    for n in args.sizes:
        bench_size(n, args)


if __name__ == "__main__":
    main()
