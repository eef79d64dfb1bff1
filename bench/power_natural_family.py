"""Power of the natural family's primary test, from the noise the digits study measured.

Prints the measured noise (digits study, natural family A: gFID seed spread and spread across
VAEs, iFID-rFID rank correlation) and, for families of 8 to 48 VAEs, the power of the
pre-registered test (paired bootstrap of Spearman(iFID, gFID) - Spearman(rFID, gFID), VAEs and
probe seeds within them resampled, 95% interval above 0) to detect a difference of 0.4.

    python bench/power_natural_family.py [--simulations 400] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ifid_callback.probes.family_stats import measured_noise, simulate_power

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "digits" / "results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    noise = measured_noise(RESULTS, "A")
    print(f"measured on {RESULTS.relative_to(RESULTS.parents[3])}, group {noise.group}:")
    print(
        f"  {noise.n} VAEs, {noise.seeds_per_vae} probe seeds each, {noise.num_samples} samples "
        f"per gFID: seed std {noise.sigma_seed:.2f}, spread of VAE means "
        f"{noise.sigma_between_observed:.2f} (true spread {noise.sigma_between:.2f}), "
        f"Spearman(iFID, rFID) {noise.rho_ifid_rfid:.2f}"
    )
    # Seed noise at the new sample count: the re-run of one VAE at 10,000 samples cut the
    # spread across probe seeds about fourfold; the sample-count curve of item 1 replaces this.
    scenarios = [
        ("seed std as measured (1,000 samples)", noise.sigma_seed),
        ("seed std / 2", noise.sigma_seed / 2),
        ("seed std / 4 (10,000 samples?)", noise.sigma_seed / 4),
    ]
    rho_b, diff = 0.2, 0.4
    print(
        f"true Spearman(iFID, gFID) {rho_b + diff:.1f} vs Spearman(rFID, gFID) {rho_b:.1f} "
        f"(difference {diff}), Spearman(iFID, rFID) {noise.rho_ifid_rfid:.2f}, true gFID spread "
        f"{noise.sigma_between:.2f}, a second probe seed for a random third;"
    )
    print(
        f"{args.simulations} simulated families per cell, {args.resamples} bootstrap resamples; "
        "power = P(95% interval above 0)"
    )
    sizes = (8, 16, 24, 48)
    print(f"{'seed noise':<48}" + "".join(f"{f'n={n}':>10}" for n in sizes))
    started = time.time()
    for label, sigma_seed in scenarios:
        cells = []
        for n in sizes:
            result = simulate_power(
                n,
                rho_a=rho_b + diff,
                rho_b=rho_b,
                rho_ab=noise.rho_ifid_rfid,
                sigma_between=noise.sigma_between,
                sigma_seed=sigma_seed,
                simulations=args.simulations,
                num_resamples=args.resamples,
                seed=args.seed,
            )
            cells.append(f"{result['power']:>10.2f}")
        print(f"{label + f' ({sigma_seed:.2f})':<48}" + "".join(cells))
    for rho_ab in (0.0, 0.4):
        result = simulate_power(
            48,
            rho_a=rho_b + diff,
            rho_b=rho_b,
            rho_ab=rho_ab,
            sigma_between=noise.sigma_between,
            sigma_seed=noise.sigma_seed / 4,
            simulations=args.simulations,
            num_resamples=args.resamples,
            seed=args.seed,
        )
        print(
            f"sensitivity: Spearman(iFID, rFID) {rho_ab:.1f}, seed std / 4, n=48: power "
            f"{result['power']:.2f}"
        )
    for n in (8, 48):
        result = simulate_power(
            n,
            rho_a=0.4,
            rho_b=0.4,
            rho_ab=noise.rho_ifid_rfid,
            sigma_between=noise.sigma_between,
            sigma_seed=noise.sigma_seed / 4,
            simulations=args.simulations,
            num_resamples=args.resamples,
            seed=args.seed,
        )
        print(
            f"false positives: no difference (both 0.4), seed std / 4, n={n}: "
            f"{result['power']:.3f} (nominal 0.025)"
        )
    print(f"[{time.time() - started:.0f} s]")


if __name__ == "__main__":
    main()
