"""Calibration of the paired standard error of a difference of two FIDs on the same images.

Two fixed "checkpoints" score the same evaluation images: real features come from a fixed
non-Gaussian distribution (a random mix of Gaussian coordinates plus a skewed quadratic part),
checkpoint a maps each real row through a fixed smooth distortion, checkpoint b through another,
and each adds its own per-image noise. Both fake sets depend on the shared real row, so their
FIDs are correlated. Each draw takes N fresh images and computes FID_a, FID_b, the paired
standard error of FID_a - FID_b (``paired_difference``) and, for contrast, the independent
rule ``sqrt(se_a^2 + se_b^2)`` (what ``recommend_min_delta``'s default assumes). Printed: the
mean of each standard error over the draws divided by the empirical std of FID_a - FID_b over
the draws (1.0 is calibrated; the paired one must lie in [0.85, 1.3]).

Scenarios: "near" (b differs from a by a small change of the distortion, noise 0.1: two nearby
checkpoints of one run), "far" (b a different distortion, noise 0.3), at d = 32 (N > d) and
d = 256 (N < d, the training-time regime of 2048-d Inception features and a few hundred images).

Last, the same calibration end to end through the metric (what ``IFIDMonitor`` logs as
``ifid_vs_best_std``): two fixed checkpoints of a small VAE (``TinyVAE`` trained for 60 and for
90 steps on smooth random images), each with a fixed bank of 256 reference latents, a 32-d
stand-in feature network (``SmokeFeatures``); each draw takes N fresh evaluation images, runs
``InterpolatedFID`` for both checkpoints and takes ``metric_a.compare(metric_b)["ifid"]``.

Usage: python bench/bench_paired.py [--draws 500] [--n 200] [--metric-draws 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback import InterpolatedFID, LatentBank  # noqa: E402
from ifid_callback.demo import SmokeFeatures  # noqa: E402
from ifid_callback.functional import (  # noqa: E402
    frechet_influence_vectors,
    influence_standard_error,
    paired_difference,
)
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig  # noqa: E402

SCENARIOS = ("near", "far")


class Calibration(NamedTuple):
    """Figures of one scenario over its draws (FID units, floats)."""

    fid_a: float  # mean FID of checkpoint a
    fid_b: float
    std_a: float  # empirical std of FID_a over the draws
    std_b: float
    std_diff: float  # empirical std of FID_a - FID_b over the draws
    paired_ratio: float  # mean paired SE / std_diff
    independent_ratio: float  # mean sqrt(se_a^2 + se_b^2) / std_diff


class Checkpoints:
    """The fixed real distribution and the two fixed fake generators of one scenario.

    Args:
        scenario: ``"near"`` or ``"far"`` (see the module docstring).
        d: feature dimension.
        seed: seed of the fixed mixing matrices (the "weights" of the two checkpoints).
    """

    def __init__(self, scenario: str, d: int, seed: int = 0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}.")
        g = torch.Generator().manual_seed(seed)
        mats = [torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d) for _ in "1234"]
        self.mix, self.skew, self.warp_a, self.warp_b = mats
        self.scenario, self.d = scenario, d

    def real(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, d) real features: Gaussian coordinates mixed, plus a skewed quadratic part."""
        z = torch.randn(n, self.d, generator=g, dtype=torch.float64)
        return z @ self.mix + 0.4 * (z**2 - 1) @ self.skew

    def fakes(self, real: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        """The two checkpoints' (n, d) fake rows for these real rows, each with its own noise."""

        def noise(scale: float) -> torch.Tensor:
            return scale * torch.randn(real.shape, generator=g, dtype=torch.float64)

        bent = torch.tanh(real) @ self.warp_a
        wave = torch.sin(real) @ self.warp_b
        if self.scenario == "near":
            a = real + 0.4 * bent + 0.1 + noise(0.1)
            b = real + 0.45 * bent + 0.1 * wave + 0.1 + noise(0.1)
        else:
            a = real + 0.4 * bent + 0.1 + noise(0.3)
            b = 0.9 * real + 0.4 * wave + 0.1 + noise(0.3)
        return {"a": a, "b": b}


def calibrate(scenario: str, d: int, n: int, draws: int, seed: int = 1) -> Calibration:
    """Mean standard errors against the empirical spread of FID_a - FID_b over ``draws`` draws of
    ``n`` evaluation images from one scenario."""
    checkpoints = Checkpoints(scenario, d)
    g = torch.Generator().manual_seed(seed)
    table = torch.empty(draws, 5, dtype=torch.float64)  # fid_a, fid_b, se_a, se_b, paired se
    for r in range(draws):
        real = checkpoints.real(n, g)
        found = frechet_influence_vectors(real, checkpoints.fakes(real, g))
        diff = paired_difference(found["a"], found["b"])
        se_a, se_b = (influence_standard_error(found[k].influence) for k in "ab")
        table[r] = torch.stack([found["a"].value, found["b"].value, se_a, se_b, diff.std_error])
    return _summary(table)


SIZE = 16  # evaluation image side of the end-to-end calibration


def smooth_images(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3, SIZE, SIZE) random smooth images in [-1, 1]: a fixed distribution to draw from."""
    low = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(low, size=SIZE, mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def trained_checkpoints(steps: tuple[int, int] = (60, 90), seed: int = 0) -> list[TinyVAE]:
    """Two checkpoints of one small VAE run: copies after ``steps[0]`` and ``steps[1]`` Adam
    steps on batches of 16 smooth images (nearby checkpoints, as in a training run)."""
    torch.manual_seed(seed)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 1)
    kept = []
    for step in range(1, max(steps) + 1):
        out = vae.loss(smooth_images(16, g))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        if step in steps:
            kept.append(copy.deepcopy(vae).eval())
    return kept


def calibrate_metric(n: int, draws: int, seed: int = 2) -> Calibration:
    """:func:`calibrate` end to end: ``InterpolatedFID`` of two fixed checkpoints over ``draws``
    draws of ``n`` evaluation images, with ``compare`` for the paired standard error."""
    g = torch.Generator().manual_seed(seed)
    reference = smooth_images(256, g)
    metrics = []
    for vae in trained_checkpoints():
        bank = LatentBank(capacity=256)
        with torch.no_grad():
            bank.add(vae.encode(reference).mean)
        metrics.append(InterpolatedFID(vae=vae, bank=bank, feature=SmokeFeatures(32)))
    table = torch.empty(draws, 5, dtype=torch.float64)  # fid_a, fid_b, se_a, se_b, paired se
    for r in range(draws):
        images = smooth_images(n, g)
        found = []
        for metric in metrics:
            metric.reset()
            metric.update(images)
            found.append(metric.influences().ifid)
        diff = metrics[0].compare(metrics[1])["ifid"]
        se_a, se_b = (influence_standard_error(f.influence) for f in found)
        table[r] = torch.stack([found[0].value, found[1].value, se_a, se_b, diff.std_error])
    return _summary(table)


def _summary(table: torch.Tensor) -> Calibration:
    """The figures of a (draws, 5) table of fid_a, fid_b, se_a, se_b, paired se."""
    fid_a, fid_b, se_a, se_b, se_paired = table.unbind(1)
    std_diff = float((fid_a - fid_b).std())
    independent = (se_a**2 + se_b**2).sqrt()
    return Calibration(
        float(fid_a.mean()),
        float(fid_b.mean()),
        float(fid_a.std()),
        float(fid_b.std()),
        std_diff,
        float(se_paired.mean()) / std_diff,
        float(independent.mean()) / std_diff,
    )


def _row(name: str, d: int, c: Calibration, seconds: float) -> str:
    return (
        f"{name:>8} {d:>4} {c.fid_a:8.3f} {c.fid_b:8.3f} {c.std_a:8.4f} "
        f"{c.std_b:8.4f} {c.std_diff:8.4f} {c.paired_ratio:7.3f} "
        f"{c.independent_ratio:7.3f} {seconds:5.1f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=500, help="draws of evaluation images")
    parser.add_argument("--n", type=int, default=200, help="evaluation images per draw")
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--metric-draws", type=int, default=300, help="0: skip the metric run")
    parser.add_argument("--metric-n", type=int, default=100, help="images per metric draw")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"N = {args.n} images per draw, {args.draws} draws; ratio = mean SE / std(FID_a - FID_b)")
    head = (
        f"{'scenario':>8} {'d':>4} {'FID a':>8} {'FID b':>8} {'std a':>8} {'std b':>8} "
        f"{'std a-b':>8} {'paired':>7} {'indep.':>7} {'time':>6}"
    )
    print(head)
    for d in args.dims:
        for scenario in SCENARIOS:
            start = time.perf_counter()
            c = calibrate(scenario, d, args.n, args.draws)
            print(_row(scenario, d, c, time.perf_counter() - start))
    if args.metric_draws:
        start = time.perf_counter()
        c = calibrate_metric(args.metric_n, args.metric_draws)
        print(
            f"end to end (InterpolatedFID.compare), N = {args.metric_n}, {args.metric_draws} draws:"
        )
        print(_row("metric", 32, c, time.perf_counter() - start))


if __name__ == "__main__":
    main()
