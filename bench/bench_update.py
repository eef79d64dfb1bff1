"""Cost of one InterpolatedFID.update() against its floor and against torchmetrics' FID.

The floor is the work no implementation of iFID + rFID can skip: one encode of the B images, one
batched decode of the 2B latents (reconstruction and interpolant), and one feature pass over the
2B decodes (real-image features cached, as in training-time use). The peer is torchmetrics'
FrechetInceptionDistance computing rFID alone on the same images with the same feature network
(real and reconstruction features per batch, one decode of B).

Usage: python bench/bench_update.py [--batch 16] [--bank 10000] [--repeats 3] [--features inception|cheap]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback import InterpolatedFID, LatentBank  # noqa: E402
from ifid_callback.functional import interpolate  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE  # noqa: E402


class CheapFeatures(torch.nn.Module):
    """A fixed random projection: makes the metric's own overhead visible."""

    num_features = 64

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(in_dim, self.num_features) / in_dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ self.w)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    kind: str, vae: TinyVAE, x: torch.Tensor, bank: LatentBank, repeats: int
) -> tuple[float, float, float]:
    """Median seconds of (floor, our update, torchmetrics rFID update) with one feature network."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if kind == "inception":
        from ifid_callback.features import InceptionFeatures

        feat = InceptionFeatures()
    else:
        feat = CheapFeatures(x[0].numel())
    metric = InterpolatedFID(vae=vae, feature=feat, bank=bank, reset_real_features=False)
    metric.update(x)
    metric.compute()  # caches the real statistics, as a training monitor does
    with torch.no_grad():
        z_nn = metric.neighbors(vae.encode(x).mean)[0]

    def floor() -> None:
        with torch.no_grad():
            z = vae.encode(x).mean
            z_hat = interpolate(z, z_nn, "slerp", 0.5)
            feat(vae.decode(torch.cat([z, z_hat])).clamp(-1, 1))

    tm = FrechetInceptionDistance(feature=feat, reset_real_features=True)

    def peer() -> None:
        with torch.no_grad():
            recon = vae.decode(vae.encode(x).mean).clamp(-1, 1)
        tm.update(x, real=True)
        tm.update(recon, real=False)

    return timed(floor, repeats), timed(lambda: metric.update(x), repeats), timed(peer, repeats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--bank", type=int, default=10_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--features", choices=("inception", "cheap", "both"), default="both")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    vae = TinyVAE().eval()
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    with torch.no_grad():
        bank = LatentBank(capacity=args.bank)
        for _ in range(0, args.bank, 1000):
            bank.add(vae.encode(torch.rand(1000, 3, args.size, args.size) * 2 - 1).mean)
    kinds = ["cheap", "inception"] if args.features == "both" else [args.features]
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch} at {args.size}x{args.size}, "
        f"bank {len(bank)} x {bank.dim}, median of {args.repeats}"
    )
    print(
        f"{'features':<10} {'floor s':>9} {'update s':>9} {'ratio':>7} {'target':>7} {'tm rFID s':>10} {'vs tm':>7}"
    )
    for kind in kinds:
        t_floor, t_ours, t_peer = measure(kind, vae, x, bank, args.repeats)
        print(
            f"{kind:<10} {t_floor:>9.3f} {t_ours:>9.3f} {t_ours / t_floor:>6.2f}x {'<=1.15':>7} "
            f"{t_peer:>10.3f} {t_ours / t_peer:>6.2f}x"
        )
    print(
        "ratio: update / floor (iFID + rFID); vs tm: update (iFID + rFID) / torchmetrics FID (rFID only)"
    )


if __name__ == "__main__":
    main()
