"""How few evaluation images the standard errors of FID stay calibrated at.

The infinitesimal-jackknife standard error (``frechet_influence``) is a large-sample estimate:
with a handful of images the influences are computed from the same few rows they describe, and
the reported spread falls short of the true one. For each N, fresh draws of N images from fixed
stand-in feature distributions give FID values and reported standard errors; printed is the
mean reported SE divided by the empirical std of FID over the draws (1.0 is calibrated), for
single FIDs and for the paired difference of two checkpoints on the same images
(``paired_difference``).

Stand-in features (``bench/bench_paired.py``'s fixed "checkpoints"): real rows from a fixed
non-Gaussian distribution, fake rows a fixed smooth distortion of each real row plus noise.
Scenarios "near" (two nearby checkpoints, noise 0.1) and "far" (noise 0.3), at d = 64 and
d = 256 (always N < d here, as with 2048-d Inception features).

The smallest N whose ratios all lie in [0.85, 1.3] (for the single FIDs of both checkpoints and
for their paired difference, in every scenario and dimension) is printed last: below it the
metric warns (``ifid_callback.extras.uncertainty.CALIBRATED_QUERIES``).

Usage: python bench/bench_small_n.py [--draws 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_paired import SCENARIOS, Checkpoints  # noqa: E402
from ifid_callback.functional import (  # noqa: E402
    frechet_influence_vectors,
    influence_standard_error,
    paired_difference,
)

SIZES = (3, 4, 5, 8, 16, 32)
# A ratio counts as calibrated in this interval (the paired calibration's tolerance).
LOW, HIGH = 0.85, 1.3


class SmallN(NamedTuple):
    """Mean reported SE / empirical std over the draws at one N (floats; 1.0 is calibrated)."""

    ratio_a: float  # FID of checkpoint a
    ratio_b: float  # FID of checkpoint b
    ratio_paired: float  # FID_a - FID_b, paired standard error

    def calibrated(self) -> bool:
        return all(LOW <= r <= HIGH for r in self)


def measure(scenario: str, d: int, n: int, draws: int, seed: int = 1) -> SmallN:
    """Ratios at ``n`` images over ``draws`` fresh draws of one scenario's stand-in features."""
    checkpoints = Checkpoints(scenario, d)
    g = torch.Generator().manual_seed(seed)
    table = torch.empty(draws, 5, dtype=torch.float64)  # fid_a, fid_b, se_a, se_b, paired se
    for r in range(draws):
        real = checkpoints.real(n, g)
        found = frechet_influence_vectors(real, checkpoints.fakes(real, g))
        se_a, se_b = (influence_standard_error(found[k].influence) for k in "ab")
        paired = paired_difference(found["a"], found["b"]).std_error
        table[r] = torch.stack([found["a"].value, found["b"].value, se_a, se_b, paired])
    fid_a, fid_b, se_a, se_b, se_paired = table.unbind(1)
    return SmallN(
        float(se_a.mean() / fid_a.std()),
        float(se_b.mean() / fid_b.std()),
        float(se_paired.mean() / (fid_a - fid_b).std()),
    )


def smallest_calibrated(rows: dict[int, list[SmallN]]) -> int | None:
    """The smallest N from which on every measured N is calibrated in every case."""
    found = None
    for n in sorted(rows, reverse=True):
        if not all(r.calibrated() for r in rows[n]):
            break
        found = n
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=1000, help="draws of images per N")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.draws} draws per N; ratio = mean reported SE / empirical std over the draws")
    print(f"{'scenario':>8} {'d':>4} {'N':>3} {'FID a':>7} {'FID b':>7} {'a - b':>7} {'time':>6}")
    rows: dict[int, list[SmallN]] = {n: [] for n in args.sizes}
    for d in args.dims:
        for scenario in SCENARIOS:
            for n in args.sizes:
                start = time.perf_counter()
                m = measure(scenario, d, n, args.draws)
                rows[n].append(m)
                print(
                    f"{scenario:>8} {d:>4} {n:>3} {m.ratio_a:7.3f} {m.ratio_b:7.3f} "
                    f"{m.ratio_paired:7.3f} {time.perf_counter() - start:5.1f}s"
                )
    for n in args.sizes:
        ratios = [r for m in rows[n] for r in m]
        print(f"N = {n:>3}: ratios {min(ratios):.3f}-{max(ratios):.3f}")
    print(
        f"smallest N with every ratio in [{LOW}, {HIGH}] (and at every larger N measured): "
        f"{smallest_calibrated(rows)}"
    )


if __name__ == "__main__":
    main()
