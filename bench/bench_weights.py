"""Cost of measuring averaged weights: one evaluation of the training and the EMA weights
(``extra_vaes``) against the plain evaluation, and against two separate monitors.

Per evaluation of the demo TinyVAE (32x32 patches) on 512 evaluation images, bank of 2048 rows:

* plain: the training weights only (``IFIDMonitor(vae, ...)``);
* + EMA in one evaluation: ``extra_vaes={"ema": ema}``, sharing the cached real statistics and
  the feature network (only the EMA weights' encodes and decodes are added);
* two monitors: the same two numbers from separate monitors (each with its own real pass on its
  first evaluation and its own feature network);
* exact bank: ``exact_bank=True`` with the EMA weights evaluated (the bank's images re-encoded).

First evaluations (real statistics computed) and later ones (cached) are timed separately: medians
of ``--repeats`` runs. Features: a fixed random conv net (the standard Inception on a small CPU
would dominate every figure equally); ratios are what this prints.

Run: ``python bench/bench_weights.py`` (``--quick`` for fewer repeats).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_monitor import RandomConvFeatures, _data  # noqa: E402

from ifid_callback.monitor import IFIDMonitor  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    train, eval_images, name = _data(2048, 512)
    print(f"data: {name}, train {tuple(train.shape)}, eval {tuple(eval_images.shape)}")
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=16))
    ema = AveragedModel(vae, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for x in train.split(64)[:8]:
        opt.zero_grad()
        vae.loss(x)["loss"].backward()
        opt.step()
        ema.update_parameters(vae)
    common = dict(eval_images=eval_images, bank_capacity=2048, eval_batch_size=128, seed=0)

    def fresh(**kwargs) -> IFIDMonitor:
        monitor = IFIDMonitor(vae, feature=RandomConvFeatures(), **common, **kwargs)
        with torch.no_grad():
            for x in train.split(256):
                monitor.observe(latents=vae.encode(x).mean, images=x)
        return monitor

    setups = {
        "plain": lambda: [fresh()],
        "+ EMA in one evaluation": lambda: [fresh(extra_vaes={"ema": ema})],
        "two monitors": lambda: [fresh(), fresh(eval_vae=ema)],
        "+ EMA, exact bank": lambda: [fresh(extra_vaes={"ema": ema}, exact_bank=True)],
    }
    # Round-robin over the setups, so a change of machine load hits all of them alike.
    times: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in setups}
    for _ in range(repeats):
        for label, build in setups.items():
            monitors = build()
            times[label][0].append(sum(_timed(m.evaluate) for m in monitors))
            times[label][1].append(sum(_timed(m.evaluate) for m in monitors))
    rows = {
        label: (statistics.median(f), statistics.median(la)) for label, (f, la) in times.items()
    }
    base_first, base_later = rows["plain"]
    print(f"\n{'evaluation':28s} {'first (s)':>10s} {'ratio':>7s} {'later (s)':>10s} {'ratio':>7s}")
    for label, (first, later) in rows.items():
        print(
            f"{label:28s} {first:10.3f} {first / base_first:7.2f} {later:10.3f} "
            f"{later / base_later:7.2f}"
        )
    one, two = rows["+ EMA in one evaluation"], rows["two monitors"]
    print(
        f"\none evaluation of both weights / two monitors: first {one[0] / two[0]:.2f}, "
        f"later {one[1] / two[1]:.2f}"
    )


if __name__ == "__main__":
    main()
