"""Training-time cost of IFIDMonitor and how far a rolling bank's iFID is from an exact bank's.

1. Overhead between evaluations: per training step of the demo TinyVAE (32x32 photo patches,
   batch 32, Adam), the time of ``monitor.observe`` (bank insertion, index refresh amortised)
   as a percentage of the step time. Target <= 2 %.
2. Rolling vs exact bank over the checkpoints of one training run: at each checkpoint iFID with
   the rolling bank (latents as the encoder produced them during training) and with an exact
   bank (the same images re-encoded with the current encoder). Spearman rank correlation of the
   two across checkpoints (target >= 0.95) and their mean relative difference.

Features: the standard Inception runs at ~5 images/s on a small CPU, too slow for many
checkpoints, so part 2 uses a fixed random convolutional feature network (64-d). The
comparison is between two banks under the same features, which is what part 2 measures.

3. Cost of the evaluation extras: one evaluation (``reset``, ``update`` over the evaluation
   images, ``compute``; real statistics cached, as in every evaluation after the first) with
   each extra on, as a ratio to the plain iFID+rFID evaluation (all extras off; fastest of
   ``--repeats`` interleaved runs), and each extra's own work timed alone (steadier than the
   difference of two whole evaluations on a shared machine): the defaults
   (standard errors + PSNR/SSIM/MSE), each of them alone, precision/recall and KID. Measured
   with the 64-d stand-in features (a cheap feature pass: the worst case for the ratios), then
   the extras' added seconds with 2048-d stand-in features (Inception's dimension, where the
   per-image extras cost most) against the plain evaluation with the standard Inception, timed
   per image on a few batches and scaled to N (its cost is linear in N).

Run: ``python bench/bench_monitor.py`` (``--quick`` for a shorter run; ``--part 3`` for the
extras only; part 3 times CPU seconds: run it with ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig


class RandomConvFeatures(nn.Module):
    """Fixed random conv net: (B, 3, H, W) images -> (B, d) features (a stand-in for Inception)."""

    num_features = 64

    def __init__(self, seed: int = 0, num_features: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_features = num_features
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(256, num_features),
        )
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5)
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())  # half-precision or autocast images on a GPU


def _data(n_train: int, n_eval: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from ifid_callback.data import EmbeddedPatches

        train = EmbeddedPatches(split="train", size=32, max_items=n_train, seed=0)
        val = EmbeddedPatches(split="val", size=32, max_items=n_eval, seed=0)
        return (
            torch.stack([train[i] for i in range(len(train))]),
            torch.stack([val[i] for i in range(len(val))]),
            "EmbeddedPatches 32x32",
        )
    except Exception as err:  # no photo packages: smooth random images
        print(f"(photo patches unavailable: {err}; using smooth random images)")
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n_train + n_eval, 3, 8, 8, generator=g) * 2 - 1
        x = nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
        return x[:n_train], x[n_train:], "smooth random 32x32"


def _batches(train: torch.Tensor, batch: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield train[torch.randint(0, train.shape[0], (batch,), generator=g)]


def bench_overhead(train: torch.Tensor, eval_images: torch.Tensor, steps: int) -> None:
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig())  # the demo configuration (base_channels=32)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    print(
        f"\n== 1. overhead between evaluations (TinyVAE base 32, batch 32, {steps} steps, index refresh every 25) =="
    )
    for source, kwargs in (
        ("outputs", {}),
        ("encode", {"encode_fraction": 0.25}),
    ):
        monitor = IFIDMonitor(
            vae,
            eval_images=eval_images[:64],
            feature=RandomConvFeatures(),
            bank_capacity=10_000,
            refresh_every_n_steps=25,  # more often than needed: a conservative amortisation
            latent_source=source,
            **kwargs,
        )
        step_t, observe_t, refresh_n = [], [], 0
        for step, x in enumerate(_batches(train, 32, steps, seed=1), 1):
            t0 = time.perf_counter()
            out = vae.loss(x)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            t1 = time.perf_counter()
            if source == "outputs":
                monitor.observe(latents=out["latents"], step=step)
            else:
                monitor.observe(images=x, step=step)
            t2 = time.perf_counter()
            refresh_n += monitor.last_refresh_step == step
            if step > 5:  # skip warm-up
                step_t.append(t1 - t0)
                observe_t.append(t2 - t1)
        step_ms = 1e3 * float(np.median(step_t))
        obs_ms = 1e3 * float(np.mean(observe_t))  # mean: includes the amortised refreshes
        print(
            f"latent_source={source:8s} step {step_ms:7.2f} ms (median) | observe "
            f"{obs_ms:6.3f} ms (mean, {refresh_n} refreshes of a bank up to "
            f"{len(monitor.bank)} rows) | overhead {100 * obs_ms / step_ms:5.2f} %"
        )


def bench_rolling_vs_exact(
    train: torch.Tensor, eval_images: torch.Tensor, steps: int, every: int, capacity: int
) -> None:
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=16))
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    common = dict(
        eval_images=eval_images,
        bank_capacity=capacity,
        eval_batch_size=128,
        seed=0,
    )
    rolling = IFIDMonitor(vae, feature=RandomConvFeatures(), **common)
    exact = IFIDMonitor(vae, feature=RandomConvFeatures(), exact_bank=True, **common)
    print(
        f"\n== 2. rolling vs exact bank (TinyVAE base 16, batch 32, {steps} steps, bank "
        f"{capacity}, {eval_images.shape[0]} eval images, checkpoint every {every} steps) =="
    )
    rows = []
    for step, x in enumerate(_batches(train, 32, steps, seed=2), 1):
        out = vae.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        rolling.observe(latents=out["latents"], step=step)
        exact.observe(latents=out["latents"], images=x, step=step)
        if step % every == 0:
            t0 = time.perf_counter()
            r = rolling.evaluate(step)
            t1 = time.perf_counter()
            e = exact.evaluate(step)
            t2 = time.perf_counter()
            rows.append((step, r["ifid"], e["ifid"], r["rfid"], t1 - t0, t2 - t1))
            print(
                f"step {step:5d}  iFID rolling {r['ifid']:9.4f}  exact {e['ifid']:9.4f}  "
                f"rel.diff {abs(r['ifid'] - e['ifid']) / e['ifid']:6.3%}  rFID {r['rfid']:8.4f}"
                f"  eval {t1 - t0:5.2f}s / {t2 - t1:5.2f}s"
            )
    steps_, roll, ex = (np.array(c) for c in list(zip(*rows))[:3])
    rho = spearmanr(roll, ex).statistic
    rel = np.abs(roll - ex) / ex
    print(f"Spearman(rolling, exact) across {len(rows)} checkpoints: {rho:.4f} (target >= 0.95)")
    print(f"mean relative difference: {rel.mean():.3%} (max {rel.max():.3%})")
    late = rows[len(rows) // 2 :]
    if len(late) >= 3:
        rho_late = spearmanr([r[1] for r in late], [r[2] for r in late]).statistic
        print(f"Spearman over the later half of the checkpoints only: {rho_late:.4f}")


# Extras configurations of part 3: InterpolatedFID options on top of the plain evaluation.
_PLAIN = {"uncertainty": False, "reconstruction_metrics": False}
EXTRAS = {
    "plain iFID+rFID": {},
    "defaults (SE + PSNR/SSIM/MSE)": {"uncertainty": True, "reconstruction_metrics": True},
    "+ noise estimate (SE) only": {"uncertainty": True},
    "+ PSNR/SSIM/MSE only": {"reconstruction_metrics": True},
    "+ precision/recall": {"precision_recall": True},
    "+ KID": {"kid": True},
}


def _evaluation_runs(vae: nn.Module, bank, eval_images: torch.Tensor, feature: nn.Module):
    """One evaluation function per extras configuration (real statistics cached by a first run)."""
    from ifid_callback.metric import InterpolatedFID

    runs = {}
    for name, options in EXTRAS.items():
        metric = InterpolatedFID(
            vae=vae, feature=feature, bank=bank, reset_real_features=False, **{**_PLAIN, **options}
        )

        def run(metric=metric) -> None:
            metric.reset()
            for start in range(0, eval_images.shape[0], 128):
                positions = torch.arange(start, min(start + 128, eval_images.shape[0]))
                metric.update(eval_images[start : start + 128], positions=positions)
            metric.compute()

        with torch.no_grad():
            run()  # the first evaluation computes (and caches) the real statistics
        runs[name] = run
    return runs


def _fastest_seconds(runs, repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` CPU-time measurements of each run, the runs interleaved.

    CPU time of this process (``time.process_time``): on a shared machine wall time mostly
    measures the other jobs; run with one thread (``OMP_NUM_THREADS=1``) so that CPU time is the
    work itself.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for _ in range(repeats):
            for name, run in runs.items():
                t0 = time.process_time()
                run()
                times[name].append(time.process_time() - t0)
    return {name: min(values) for name, values in times.items()}


def _own_costs(vae: nn.Module, bank, eval_images: torch.Tensor, feature: nn.Module, repeats: int):
    """CPU seconds of each extra's own work on one evaluation's data (fastest of ``repeats``):
    the compute-time functions on the rows the metric holds, PSNR/SSIM/MSE of the decoded
    reconstructions. Steadier than the difference of two whole evaluations on a shared machine.
    """
    from ifid_callback.functional import (
        frechet_influence,
        kernel_inception_distances,
        precision_recall,
        reconstruction_sums,
    )
    from ifid_callback.metric import InterpolatedFID, _cat_state

    metric = InterpolatedFID(
        vae=vae, feature=feature, bank=bank, uncertainty=True, kid=True, precision_recall=True
    )
    with torch.no_grad():
        for start in range(0, eval_images.shape[0], 128):
            metric.update(eval_images[start : start + 128])
        recon = torch.cat([vae.decode(vae.encode(x).mean) for x in eval_images.split(128)])
    recon = recon.clamp(-1, 1)
    real, interp, rec = (
        _cat_state(getattr(metric, f"{name}_feature_rows"), torch.float32).double()
        for name in ("real", "interp", "recon")
    )
    kid_subsets = 1 if real.shape[0] <= 1000 else 100
    jobs = {
        "noise estimate (SE of iFID and rFID)": lambda: frechet_influence(
            real, {"ifid": interp, "rfid": rec}
        ),
        "PSNR/SSIM/MSE": lambda: [
            reconstruction_sums(r, x) for r, x in zip(recon.split(128), eval_images.split(128))
        ],
        "precision/recall": lambda: precision_recall(real, interp, k=3),
        "KID": lambda: kernel_inception_distances(
            real, {"ikid": interp, "rkid": rec}, subsets=kid_subsets
        ),
    }
    out = {}
    for name, job in jobs.items():
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            job()
            times.append(time.process_time() - t0)
        out[name] = min(times)
    return out


def bench_extras(train: torch.Tensor, eval_images: torch.Tensor, repeats: int) -> None:
    from ifid_callback.bank import LatentBank

    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig()).eval()  # the demo configuration (base_channels=32)
    bank = LatentBank(capacity=2048)
    with torch.no_grad():
        for chunk in train[:2048].split(256):
            bank.add(vae.encode(chunk).mean)
    n = eval_images.shape[0]
    print(
        f"\n== 3. evaluation cost of the extras (TinyVAE base 32, {n} eval images 32x32, bank "
        f"{len(bank)}, real statistics cached; CPU seconds, fastest of {repeats}, configurations interleaved) =="
    )
    for dim in (64, 2048):
        feature = RandomConvFeatures(num_features=dim)
        seconds = _fastest_seconds(_evaluation_runs(vae, bank, eval_images, feature), repeats)
        plain = seconds["plain iFID+rFID"]
        print(f"stand-in features, d = {dim}: plain evaluation {plain:.3f} s")
        for name, value in seconds.items():
            print(
                f"  {name:32s} {value:7.3f} s  ratio {value / plain:5.3f}  (+{value - plain:.3f} s)"
            )
        own = _own_costs(vae, bank, eval_images, feature, repeats)
        print(f"  each extra's own work (d = {dim}), as a ratio to the plain evaluation:")
        for name, value in own.items():
            print(f"    {name:38s} {value:7.3f} s  ratio {(plain + value) / plain:5.3f}")
        defaults = own["noise estimate (SE of iFID and rFID)"] + own["PSNR/SSIM/MSE"]
        print(
            f"    {'defaults (SE + PSNR/SSIM/MSE)':38s} {defaults:7.3f} s  ratio "
            f"{(plain + defaults) / plain:5.3f}"
        )
        if dim == 2048:
            added = {**own, "defaults (SE + PSNR/SSIM/MSE)": defaults}
            plain_2048 = plain
    # The standard Inception: a plain evaluation passes 2N decodes through it (real cached).
    try:
        from ifid_callback.inception import InceptionFeatures

        inception = InceptionFeatures()
    except Exception as err:  # no offline weights here
        print(f"(standard Inception unavailable: {err}; skipping the Inception-scale ratios)")
        return
    x = eval_images[:16]
    with torch.no_grad():
        inception(x)  # warm-up
        t0 = time.process_time()
        inception(torch.cat([x, x]))
        per_image = (time.process_time() - t0) / (2 * x.shape[0])
    plain_inception = 2 * n * per_image + plain_2048
    print(
        f"standard Inception: {per_image * 1e3:.0f} ms per image here, so a plain evaluation of "
        f"{n} images costs ~{plain_inception:.1f} s (2N decodes through Inception + the rest)"
    )
    for name, extra in added.items():
        print(
            f"  {name:38s} +{extra:.3f} s (own work, d = 2048)  ratio "
            f"{(plain_inception + extra) / plain_inception:5.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument(
        "--part", type=int, choices=(1, 2, 3), default=None, help="run only this part"
    )
    parser.add_argument("--eval-images", type=int, default=512, help="evaluation images of part 3")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, eval_images, name = _data(4096, 256)
    print(f"data: {name}, train {tuple(train.shape)}, eval {tuple(eval_images.shape)}")
    if args.part in (None, 1):
        bench_overhead(train, eval_images, steps=30 if args.quick else 100)
    if args.part in (None, 2):
        bench_rolling_vs_exact(
            train,
            eval_images,
            steps=60 if args.quick else 300,
            every=10 if args.quick else 30,
            capacity=1024,
        )
    if args.part in (None, 3):
        extras_eval = eval_images
        if args.eval_images != eval_images.shape[0]:
            extras_eval = _data(4096, args.eval_images)[1]
        bench_extras(train, extras_eval, repeats=2 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
