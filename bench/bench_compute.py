"""Cost of InterpolatedFID.compute() with 2048-d features, first round and later rounds.

compute() turns the float64 sums into means and covariances and takes two Fréchet distances
(iFID and rFID). Each distance needs the square root of the real covariance and the spectrum of
one d x d matrix; the square root depends only on the real statistics, so it is computed once per
set of real statistics and shared by iFID and rFID and by later rounds that keep them
(``reset_real_features=False``). The "recomputed" column is what the two distances cost when each
takes its own square root (the plain ``frechet_distance`` call).

Usage: python bench/bench_compute.py [--dim 2048] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback import InterpolatedFID, LatentBank  # noqa: E402
from ifid_callback.functional.frechet import frechet_distance, gaussian_statistics  # noqa: E402


def _fill(metric: InterpolatedFID, dim: int, n: int, seed: int, real: bool) -> None:
    """Write feature sums of n random d-dim samples into the metric's states (no VAE needed)."""
    g = torch.Generator().manual_seed(seed)
    names = ("real", "interp", "recon") if real else ("interp", "recon")
    for i, name in enumerate(names):
        f = torch.randn(n, dim, generator=g, dtype=torch.float64) * (1 + 0.1 * i) + 0.05 * i
        setattr(metric, f"{name}_features_sum", f.sum(0))
        setattr(metric, f"{name}_features_cov_sum", f.T @ f)
        setattr(metric, f"{name}_num_samples", torch.tensor(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    metric = InterpolatedFID(
        encoder=lambda x: x,
        decoder=lambda z: z,
        feature=torch.nn.Identity(),
        num_features=args.dim,
        reset_real_features=False,
        bank=LatentBank(capacity=1),  # unused: compute() only reads the sums
    )
    warnings.filterwarnings("ignore", message=".*before the ``update`` method")
    times = []
    for r in range(args.rounds):
        if r > 0:
            metric.reset()  # real statistics kept: only the fake ones are new
        _fill(metric, args.dim, args.samples, seed=r, real=r == 0)
        t0 = time.perf_counter()
        metric.compute()
        times.append(time.perf_counter() - t0)

    mu_r, s_r = gaussian_statistics(
        metric.real_features_sum, metric.real_features_cov_sum, metric.real_num_samples
    )
    mu_f, s_f = gaussian_statistics(
        metric.interp_features_sum, metric.interp_features_cov_sum, metric.interp_num_samples
    )
    t0 = time.perf_counter()
    for _ in range(2):
        frechet_distance(mu_r, s_r, mu_f, s_f)
    plain = time.perf_counter() - t0

    print(f"d={args.dim}, {args.samples} samples per set, {args.threads} thread(s)")
    print(f"recomputed (two distances, each with its own square root): {plain:.2f} s")
    print(f"compute() first round (one shared square root):        {times[0]:.2f} s")
    for r, t in enumerate(times[1:], 2):
        print(f"compute() round {r} (cached square root):                {t:.2f} s")
    print(f"later round / recomputed: {times[-1] / plain:.2f}x")


if __name__ == "__main__":
    main()
