"""iFID on the demo as a function of the bank's size and of its neighbours' age.

The paper's neighbours come from a frozen bank of 1.28M latents; a training-time bank is smaller
and holds latents from older encoder weights. This measurement separates the two effects.

Design (fixed before the first run):

* the demo's VAE (``TinyVAE``, base width 16, 4 latent channels, AdamW lr 2e-3, KL weight 1e-4)
  trained on the demo's embedded 32x32 photo patches (6,077 training patches), batch 32, seed 0,
  for ``--steps`` steps (default 1,600: 51,200 latents, about 8.4 epochs);
* one ``IFIDMonitor`` per bank capacity (1,024, 5,120, 10,240 and 51,200 rows) and kind of bank,
  all observing the same training steps' posterior means: a rolling bank (rows keep the weights
  that encoded them; neighbours age) and an exact bank (``exact_bank=True``: the rows' source
  images are re-encoded with the evaluated weights, age 0);
* every monitor evaluated at the last step on the same ``--eval-images`` held-out patches (256 by
  default) with the real Inception (the demo's default), standard errors on, real statistics
  shared through one statistics cache;
* reported per capacity: the rows searched, the neighbours' median and 90th-percentile age in
  steps, iFID with its standard error, the paired difference of the rolling bank minus the exact
  bank of the same capacity (the age effect at that size) and of each exact bank minus the
  smallest exact bank (the size effect at age 0), each with its paired standard error over the
  shared evaluation images; rFID, identical for all (same weights, same images), once.

Usage: python bench/bench_bank_freshness.py [--steps 1600] [--eval-images 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback.data import EmbeddedPatches  # noqa: E402
from ifid_callback.monitor import IFIDMonitor  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig  # noqa: E402

CAPACITIES = (1024, 5120, 10240, 51200)


def _stack(dataset: EmbeddedPatches, count: int, seed: int) -> torch.Tensor:
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([dataset[int(i)] for i in pick])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--eval-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--feature", default="inception", help="'inception' or 'smoke' (fast)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--capacities", type=int, nargs="+", default=list(CAPACITIES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*understate the true spread.*")
    torch.manual_seed(0)
    train = EmbeddedPatches("train", size=32)
    val = _stack(EmbeddedPatches("val", size=32), args.eval_images, seed=0)
    vae = TinyVAE(TinyVAEConfig(base_channels=16, latent_channels=4))
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    if args.feature == "smoke":
        from ifid_callback.demo import SmokeFeatures

        feature = SmokeFeatures()
    else:
        feature = "inception"
    cache = tempfile.mkdtemp(prefix="ifid-freshness-")
    monitors = {
        (capacity, exact): IFIDMonitor(
            vae,
            eval_images=val,
            bank_capacity=capacity,
            exact_bank=exact,
            feature=feature,
            eval_batch_size=64,
            real_stats_cache=cache,
        )
        for capacity in args.capacities
        for exact in (False, True)
    }
    order = torch.Generator().manual_seed(0)
    indices = torch.empty(0, dtype=torch.long)
    start = time.perf_counter()
    vae.train()
    for step in range(1, args.steps + 1):
        if len(indices) < args.batch_size:
            indices = torch.cat([indices, torch.randperm(len(train), generator=order)])
        batch_ids, indices = indices[: args.batch_size], indices[args.batch_size :]
        batch = torch.stack([train[int(i)] for i in batch_ids])
        out = vae.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        for (_, exact), monitor in monitors.items():
            monitor.observe(latents=out["latents"], images=batch if exact else None, step=step)
    print(
        f"trained {args.steps} steps ({args.steps * args.batch_size} latents) in "
        f"{time.perf_counter() - start:.0f} s; evaluating {len(monitors)} banks on "
        f"{len(val)} held-out patches ({args.feature} features)",
        flush=True,
    )
    results, influences = {}, {}
    for key, monitor in monitors.items():
        t0 = time.perf_counter()
        results[key] = monitor.evaluate(step=args.steps)
        influences[key] = monitor.metric.influences()
        print(f"  capacity {key[0]:>6} exact={key[1]!s:<5} {time.perf_counter() - t0:.0f} s")
    first = results[(args.capacities[0], True)]
    print(f"\nrFID {first['rfid']:.2f} +- {first['rfid_std']:.2f} (same for every bank)\n")
    print(
        "| capacity | rows | age median | age p90 | iFID rolling | iFID exact | "
        "rolling - exact (paired) | exact - exact@smallest (paired) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    smallest = influences[(args.capacities[0], True)]
    for capacity in args.capacities:
        rolling, exact = results[(capacity, False)], results[(capacity, True)]
        age = monitors[(capacity, False)].metric.compare(influences[(capacity, True)])["ifid"]
        size = monitors[(capacity, True)].metric.compare(smallest)["ifid"]
        print(
            f"| {capacity} | {rolling['bank_size']} | {rolling['neighbor_age_median']:.0f} | "
            f"{rolling['neighbor_age_p90']:.0f} | {rolling['ifid']:.2f} +- "
            f"{rolling['ifid_std']:.2f} | {exact['ifid']:.2f} +- {exact['ifid_std']:.2f} | "
            f"{float(age.difference):+.2f} +- {float(age.std_error):.2f} | "
            f"{float(size.difference):+.2f} +- {float(size.std_error):.2f} |"
        )


if __name__ == "__main__":
    main()
