"""Cost of one InterpolatedFID.update() against its floor and against torchmetrics' FID.

The floor is the work no implementation of iFID + rFID can skip: one encode of the B images, one
exact nearest-neighbour search of the B latents in the bank (one (B, D) x (D, N) product with
the bank's unit rows, normalised beforehand, and an argmax), one batched decode of the 2B
latents (reconstruction and interpolant), and one feature pass over the 2B decodes (real-image
features cached, as in training-time use). "w/o NN" is the ratio against that floor without the
search (encode, decode, features only). The peer is torchmetrics' FrechetInceptionDistance
computing rFID alone on the same images with the same feature network (real and reconstruction
features per batch, one decode of B).

They are timed in interleaved rounds (floor, update, peer, floor, ...), and each ratio is the
median of the per-round ratios, so that load from other processes hits both sides alike.

It also prints the memory of one index refresh of the metric (the neighbour index rebuilt from
the bank): the peak above the resident bank, against the index's own size. The target is a
peak of at most (bank + index) * 1.10, i.e. no second copy of the bank. CPU figures are the
resident-set high-water mark of a fresh process (Linux); GPU figures (when CUDA is available)
are torch.cuda.max_memory_allocated.

Usage: python bench/bench_update.py [--batch 16] [--bank 10000] [--repeats 5]
       [--features cheap|inception|both|none] [--threads N] [--refresh-rows 200000]
       [--refresh-dim 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifid_callback import InterpolatedFID, LatentBank  # noqa: E402
from ifid_callback.functional import interpolate  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE  # noqa: E402


class CheapFeatures(torch.nn.Module):
    """A fixed random projection: makes the metric's own overhead visible."""

    num_features = 64

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(in_dim, self.num_features) / in_dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ self.w)


def interleaved(fns: list, repeats: int) -> list[list[float]]:
    """Seconds of each function in ``repeats`` rounds that run them one after the other."""
    for fn in fns:
        fn()  # warm-up
    rounds = []
    for _ in range(repeats):
        times = []
        for fn in fns:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rounds.append(times)
    return rounds


def measure(
    kind: str, vae: TinyVAE, x: torch.Tensor, bank: LatentBank, repeats: int
) -> tuple[float, float, float, float, float, float]:
    """Median seconds of (floor, our update, torchmetrics rFID update) with one feature network,
    and the medians of the per-round ratios update/floor, update/peer and update/(floor without
    the search)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if kind == "inception":
        from ifid_callback.inception import InceptionFeatures

        feat = InceptionFeatures()
    else:
        feat = CheapFeatures(x[0].numel())
    metric = InterpolatedFID(vae=vae, feature=feat, bank=bank, reset_real_features=False)
    metric.update(x)
    metric.compute()  # caches the real statistics, as a training monitor does
    with torch.no_grad():
        z_nn = metric.neighbors(vae.encode(x).mean)[0]
    rows = bank.vectors.float()
    unit_rows = torch.nn.functional.normalize(rows, dim=1)  # once, outside the timed floor

    def floor() -> None:
        with torch.no_grad():
            z = vae.encode(x).mean
            nearest = (torch.nn.functional.normalize(z.flatten(1), dim=1) @ unit_rows.T).argmax(1)
            z_hat = interpolate(z, rows[nearest].reshape(z.shape), "slerp", 0.5)
            feat(vae.decode(torch.cat([z, z_hat])).clamp(-1, 1))

    def floor_without_search() -> None:
        with torch.no_grad():
            z = vae.encode(x).mean
            z_hat = interpolate(z, z_nn, "slerp", 0.5)
            feat(vae.decode(torch.cat([z, z_hat])).clamp(-1, 1))

    tm = FrechetInceptionDistance(feature=feat, reset_real_features=True)

    def peer() -> None:
        with torch.no_grad():
            recon = vae.decode(vae.encode(x).mean).clamp(-1, 1)
        tm.update(x, real=True)
        tm.update(recon, real=False)

    rounds = interleaved([floor, lambda: metric.update(x), peer, floor_without_search], repeats)
    floor_s, ours_s, peer_s, _ = (statistics.median(col) for col in zip(*rounds))
    vs_floor = statistics.median(r[1] / r[0] for r in rounds)
    vs_peer = statistics.median(r[1] / r[2] for r in rounds)
    vs_no_search = statistics.median(r[1] / r[3] for r in rounds)
    return floor_s, ours_s, peer_s, vs_floor, vs_peer, vs_no_search


# A fresh process measures one refresh: large allocations are mmap'ed (given back when freed), and
# the resident high-water mark is reset just before the refresh (Linux /proc/self/clear_refs).
_REFRESH_PROBE = """
import json, re, sys
import torch
sys.path.insert(0, sys.argv[5])
from ifid_callback import InterpolatedFID, LatentBank

rows, dim, kind, auto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"

def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

class Features(torch.nn.Module):
    num_features = 4
    def forward(self, x):
        return x.flatten(1)[:, :4]

bank = LatentBank(capacity=rows)
g = torch.Generator().manual_seed(0)
for start in range(0, rows, 8192):
    bank.add(torch.randn(min(8192, rows - start), dim, generator=g))
metric = InterpolatedFID(encoder=lambda x: x, decoder=lambda z: z, feature=Features(), bank=bank,
                         index=kind, auto_refresh_index=auto)
metric.refresh_index()  # warm-up: libraries loaded, first-time allocations made
metric.reference.drop()
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
metric.refresh_index()
print(json.dumps({"extra": status("VmHWM") - before, "bank": bank.memory_bytes(),
                  "index": metric.reference.index.memory_bytes, "kind": metric.reference.index.kind}))
"""


def refresh_memory_cpu(rows: int, dim: int, kind: str, auto_refresh: bool) -> dict | None:
    """Bytes of one refresh in a fresh process: ``extra`` (peak above the resident bank), ``bank``,
    ``index`` and the index ``kind``; None without Linux /proc or when the probe fails."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env.setdefault("OMP_NUM_THREADS", "1")
    root = str(Path(__file__).resolve().parents[1])
    args = [str(rows), str(dim), kind, "1" if auto_refresh else "0", root]
    out = subprocess.run(
        [sys.executable, "-c", _REFRESH_PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1] if out.stderr else "refresh probe failed")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def refresh_memory_cuda(rows: int, dim: int, auto_refresh: bool) -> dict:
    """Exact index over a CUDA bank: peak of torch.cuda.max_memory_allocated during refresh."""
    device = torch.device("cuda")
    bank = LatentBank(capacity=rows, device=device)
    for start in range(0, rows, 8192):
        bank.add(torch.randn(min(8192, rows - start), dim, device=device))
    feat = torch.nn.Identity()
    feat.num_features = dim
    metric = InterpolatedFID(
        encoder=lambda x: x,
        decoder=lambda z: z,
        feature=feat,
        bank=bank,
        index="exact",
        auto_refresh_index=auto_refresh,
    ).to(device)
    metric.refresh_index()
    metric.reference.drop()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    metric.refresh_index()
    torch.cuda.synchronize()
    return {
        "extra": torch.cuda.max_memory_allocated() - before,
        "bank": bank.memory_bytes(),
        "index": metric.reference.index.memory_bytes,
        "kind": "exact (cuda)",
    }


def print_refresh(m: dict | None, auto_refresh: bool) -> None:
    if m is None:
        return
    mib = 2**20
    ratio = (m["bank"] + m["extra"]) / (m["bank"] + m["index"])
    print(
        f"{m['kind']:<14} {str(auto_refresh):>5} {m['bank'] / mib:>9.1f} {m['index'] / mib:>9.1f} "
        f"{m['extra'] / mib:>10.1f} {ratio:>6.2f}x {'<=1.10':>7}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--bank", type=int, default=10_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    p.add_argument("--features", choices=("inception", "cheap", "both", "none"), default="both")
    p.add_argument("--refresh-rows", type=int, default=200_000)
    p.add_argument("--refresh-dim", type=int, default=256)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = TinyVAE().eval()
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    with torch.no_grad():
        bank = LatentBank(capacity=args.bank)
        for _ in range(0, args.bank, 1000):
            bank.add(vae.encode(torch.rand(1000, 3, args.size, args.size) * 2 - 1).mean)
    kinds = {"both": ["cheap", "inception"], "none": []}.get(args.features, [args.features])
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch} at {args.size}x{args.size}, "
        f"bank {len(bank)} x {bank.dim}, median of {args.repeats}"
    )
    print(
        f"{'features':<10} {'floor s':>9} {'update s':>9} {'ratio':>7} {'target':>7} "
        f"{'w/o NN':>7} {'tm rFID s':>10} {'vs tm':>7}"
    )
    for kind in kinds:
        t_floor, t_ours, t_peer, vs_floor, vs_peer, vs_no_search = measure(
            kind, vae, x, bank, args.repeats
        )
        print(
            f"{kind:<10} {t_floor:>9.3f} {t_ours:>9.3f} {vs_floor:>6.2f}x {'<=1.10':>7} "
            f"{vs_no_search:>6.2f}x {t_peer:>10.3f} {vs_peer:>6.2f}x"
        )
    print(
        "ratio: update / floor (iFID + rFID); w/o NN: update / floor without the neighbour "
        "search; vs tm: update (iFID + rFID) / torchmetrics FID (rFID only); medians of "
        "per-round ratios"
    )
    print(
        f"\nindex refresh, bank {args.refresh_rows} x {args.refresh_dim} fp32 "
        "(MiB; peak: above the resident bank)"
    )
    print(
        f"{'index':<14} {'auto':>5} {'bank':>9} {'index':>9} {'peak':>10} {'ratio':>7} "
        f"{'target':>7}"
    )
    kinds_cpu = ["exact"]
    try:
        import faiss  # noqa: F401

        kinds_cpu.append("ivf-sq8")
    except ImportError:
        print("(faiss not installed: no compressed index figure)")
    for kind in kinds_cpu:
        for auto in (True, False):
            m = refresh_memory_cpu(args.refresh_rows, args.refresh_dim, kind, auto)
            print_refresh(m, auto)
    if torch.cuda.is_available():
        for auto in (True, False):
            print_refresh(refresh_memory_cuda(args.refresh_rows, args.refresh_dim, auto), auto)
    print("ratio: (bank + peak) / (bank + index)")


if __name__ == "__main__":
    main()
