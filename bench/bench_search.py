"""Exact vs approximate nearest-neighbour search on clustered latents: time, recall, memory.

Prints one row per (bank size, dim, index): build and search seconds, recall@1 against the exact
search, memory per vector (bytes and fraction of fp32), and what ``index="auto"`` picks. Targets
checked where "auto" picks the approximate index: search >= 10x faster than exact, recall@1 >= 0.95,
memory per vector <= 1/4 of fp32.

    python bench/bench_search.py            # full run
    python bench/bench_search.py --quick    # small sizes only
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import torch

from ifid_callback.index import NeighborIndex

print = functools.partial(print, flush=True)  # noqa: A001 - rows appear as they finish

# Leave this much of the machine's memory to everything else when deciding to skip a cell.
_MEMORY_LIMIT_BYTES = 12 * 2**30


def clustered(n: int, dim: int, seed: int, clusters: int = 64, rank: int = 16) -> torch.Tensor:
    """Gaussian mixture on random rank-16 patches plus isotropic noise (latent-like data)."""
    g = torch.Generator().manual_seed(1234)
    centers = torch.randn(clusters, dim, generator=g)
    bases = torch.randn(clusters, rank, dim, generator=g) / math.sqrt(rank)
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, clusters, (n,), generator=g)
    x = 0.05 * torch.randn(n, dim, generator=g)
    coef = torch.randn(n, rank, generator=g)
    for c in range(clusters):
        rows = (which == c).nonzero()[:, 0]
        x[rows] += centers[c] + coef[rows] @ bases[c]
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        cells = [(10_000, 256), (50_000, 256)]
        args.queries = min(args.queries, 300)
    else:
        # Sized for ~10 minutes on 2 CPU cores (IVF k-means training dominates the larger cells).
        cells = [(10_000, 1024), (100_000, 1024), (250_000, 1024), (10_000, 4096), (50_000, 4096)]
    header = (
        f"{'N':>8} {'D':>5} {'index':<14} {'build s':>8} {'search s':>9} {'speedup':>8} "
        f"{'recall@1':>8} {'B/vec':>7} {'/fp32':>6} {'auto':<14} targets"
    )
    print(f"{args.queries} queries, distance=cosine, {torch.get_num_threads()} threads")
    print(header)
    print("-" * len(header))
    for n, dim in cells:
        if n * dim * 4 > _MEMORY_LIMIT_BYTES:
            print(
                f"{n:>8} {dim:>5} skipped: {n * dim * 4 / 2**30:.1f} GiB fp32 bank exceeds the memory limit"
            )
            continue
        bank = clustered(n, dim, seed=1)
        queries = clustered(args.queries, dim, seed=2)
        # The resolved "auto" choice without building it twice.
        auto_kind = NeighborIndex("auto")._resolve(n, dim, bank.element_size(), cuda=False)
        t0 = time.perf_counter()
        exact = NeighborIndex("exact").build(bank)
        t1 = time.perf_counter()
        _, truth = exact.search(queries, k=1)
        t_build, t_exact = t1 - t0, time.perf_counter() - t1
        print(
            f"{n:>8} {dim:>5} {'exact':<14} {t_build:>8.2f} {t_exact:>9.2f} {1.0:>8.1f} {1.0:>8.3f} "
            f"{exact.memory_per_vector:>7.0f} {exact.memory_per_vector / (4 * dim):>6.3f} {auto_kind:<14}"
        )
        for name in ("flat", "ivf-sq8"):
            t0 = time.perf_counter()
            index = NeighborIndex(name).build(bank)
            t1 = time.perf_counter()
            _, found = index.search(queries, k=1)
            t_build, t_search = t1 - t0, time.perf_counter() - t1
            recall = float((found[:, 0] == truth[:, 0]).float().mean())
            frac = index.memory_per_vector / (4 * dim)
            speedup = t_exact / t_search
            verdict = ""
            if index.kind == auto_kind:
                ok = speedup >= 10 and recall >= 0.95 and frac <= 0.25
                verdict = (
                    f"{'PASS' if ok else 'MISS'} (>=10x: {speedup >= 10}, recall>=0.95: "
                    f"{recall >= 0.95}, <=1/4 fp32: {frac <= 0.25})"
                )
            print(
                f"{n:>8} {dim:>5} {index.kind:<14} {t_build:>8.2f} {t_search:>9.2f} {speedup:>8.1f} "
                f"{recall:>8.3f} {index.memory_per_vector:>7.0f} {frac:>6.3f} {'':<14} {verdict}"
            )
            index = None  # free it before the next build


if __name__ == "__main__":
    main()
