"""What the real-statistics cache saves: two `ifid eval` runs of two VAEs on the same images.

128 query images (64x64 photo patches written as PNGs), two small diffusers ``AutoencoderKL``
with different seeded random weights, the real Inception (offline weights), one fresh cache
directory. Each `ifid eval` runs as its own process (start-up, imports and the Inception load
included) and is timed from outside. The first run featurises the real images, the
interpolants and the reconstructions; the second (another VAE, same images) finds the real
statistics in the cache and featurises only its decodes: one of three feature passes saved.

Run: ``python bench/bench_stats_cache.py`` (about three minutes on 2 CPU cores). Prints both
times and their ratio (target: <= 0.75).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ifid_callback.data import EmbeddedPatches, save_image_folder
from ifid_callback.tiny_vae import small_autoencoder_kl

N = 128
SIZE = 64


def save_vae(path: Path, seed: int) -> Path:
    """A small AutoencoderKL (64x64 -> 4x16x16) with seeded random weights, saved for diffusers."""
    small_autoencoder_kl(seed, sample_size=SIZE).save_pretrained(path)
    return path


def ifid_eval(vae: Path, images: Path, cache: Path, out: Path) -> float:
    """Seconds of one `ifid eval` process, start-up included."""
    argv = [sys.executable, "-m", "ifid_callback.cli", "eval", "--vae", str(vae)]
    argv += ["--images", str(images), "--stats-cache", str(cache), "--batch-size", "32"]
    argv += ["--device", "cpu", "--no-progress", "--json", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        save_image_folder(EmbeddedPatches("val", size=SIZE, max_items=N).as_tensor(), images)
        vaes = [save_vae(root / f"vae{seed}", seed) for seed in (0, 1)]
        cache = root / "stats-cache"
        times, results = [], []
        for i, vae in enumerate(vaes):
            out = root / f"result{i}.json"
            times.append(ifid_eval(vae, images, cache, out))
            results.append(json.loads(out.read_text()))
    first, second = times
    cached = [r["real_stats_cached"] for r in results]
    print(f"{N} query images {SIZE}x{SIZE}, real Inception (CPU), one process per run")
    print(f"first  ifid eval (VAE seed 0, real statistics computed): {first:6.1f} s")
    print(f"second ifid eval (VAE seed 1, real statistics cached):   {second:6.1f} s")
    print(f"ratio second / first: {second / first:.2f} (target <= 0.75); cached = {cached}")


if __name__ == "__main__":
    main()
