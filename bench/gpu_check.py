"""One prepared check of every CUDA path, with the figures that show its cost at scale.

Each check runs in isolation (a failure is reported and the next check runs), prints one
PASS/FAIL line per measured case as it finishes, and the script ends with the whole table, a
summary line and exit status 1 when any line failed. docs/gpu.md explains every line.

    python bench/gpu_check.py                          # the GPU run (make gpu-check), full sizes
    python bench/gpu_check.py --device cpu --small     # reduced sizes on CPU (a few minutes)
    python bench/gpu_check.py --device cpu --tiny      # smallest sizes (what the test suite runs)
    python bench/gpu_check.py --only search,stream     # a subset (a rerun)

Nothing is downloaded: the SD-VAE is diffusers' ``AutoencoderKL`` built from the SD-VAE
configuration with seeded random weights, and the FID Inception has the standard architecture
with seeded random weights; both are what throughput and CPU-vs-device agreement need.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_monitor import RandomConvFeatures  # noqa: E402 - the benches' stand-in feature net

print = functools.partial(print, flush=True)  # noqa: A001 - lines appear as checks finish

# ImageNet-train at SD-VAE's 4x32x32 latents, and the memory budget its compressed reference
# must fit (the official code holds these 21 GB in fp32).
IMAGENET_ROWS = 1_281_167
LATENT_DIM = 4 * 32 * 32
IMAGENET_BUDGET_BYTES = 2**30
# The largest host<->device copy that still counts as scalars or ids rather than as data
# (images, latents, features) crossing the bus.
SMALL_COPY_BYTES = 64 * 1024

SD_VAE_CONFIG = {
    # The configuration of Stable Diffusion's VAE (sd-vae-ft-mse): four stages of widths
    # 128-256-512-512 with three 2x downsamplings (8x in all), 4 latent channels.
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode (full on the GPU; small and tiny on CPU)."""

    name: str
    # metric: images at sd_res (SD-VAE) and tiny_res (TinyVAE); the bank holds the queries.
    sd_res: int
    tiny_res: int
    metric_images: int
    metric_batch: int
    metric_feature: str  # "inception" (seeded random weights) or "conv" (a small stand-in)
    # Inception
    incep_batches: tuple[int, ...]
    incep_side: int  # 299: the full pipeline; smaller: the network alone at that side (tiny)
    incep_reps: int
    incep_fid_images: int
    incep_agree_images: int
    # neighbour search
    search_rows: tuple[int, ...]
    search_dim: int
    search_queries: int
    stream_rows: int
    stream_dim: int
    stream_chunk: int
    stream_queries: int
    # Lightning run
    trainer_vae: str  # "sd" or "tiny"
    trainer_res: int
    trainer_batch: int
    trainer_steps: int
    trainer_eval_images: int
    trainer_eval_batch: int
    trainer_bank: int
    # probe
    probe_latent: tuple[int, int, int]
    probe_size: str
    probe_batch: int
    probe_steps: int
    probe_samples: int
    probe_sample_steps: int


FULL = Sizes(
    name="full",
    sd_res=256,
    tiny_res=64,
    metric_images=8,
    metric_batch=4,
    metric_feature="inception",
    incep_batches=(64, 256),
    incep_side=299,
    incep_reps=5,
    incep_fid_images=1024,
    incep_agree_images=16,
    search_rows=(100_000, 1_000_000),
    search_dim=LATENT_DIM,
    search_queries=10_000,
    stream_rows=IMAGENET_ROWS,
    stream_dim=LATENT_DIM,
    stream_chunk=65_536,
    stream_queries=1_000,
    trainer_vae="sd",
    trainer_res=256,
    trainer_batch=8,
    trainer_steps=30,
    trainer_eval_images=10_000,
    trainer_eval_batch=32,
    trainer_bank=10_000,
    probe_latent=(4, 32, 32),
    probe_size="S",
    probe_batch=64,
    probe_steps=20,
    probe_samples=32,
    probe_sample_steps=50,
)
SMALL = replace(
    FULL,
    name="small",
    sd_res=32,
    tiny_res=32,
    metric_images=8,
    metric_batch=4,
    metric_feature="conv",
    incep_batches=(2, 4),
    incep_reps=1,
    incep_fid_images=8,
    incep_agree_images=2,
    search_rows=(10_000, 50_000),
    search_dim=1024,
    search_queries=1_000,
    stream_rows=32_000,
    stream_dim=128,
    stream_chunk=4_000,
    stream_queries=500,
    trainer_vae="tiny",
    trainer_res=32,
    trainer_batch=16,
    trainer_steps=20,
    trainer_eval_images=256,
    trainer_eval_batch=64,
    trainer_bank=512,
    probe_latent=(4, 8, 8),
    probe_batch=8,
    probe_steps=2,
    probe_samples=4,
    probe_sample_steps=4,
)
TINY = replace(
    SMALL,
    name="tiny",
    sd_res=16,
    tiny_res=16,
    metric_images=6,
    metric_batch=3,
    metric_feature="conv",
    incep_batches=(1, 2),
    incep_side=75,
    incep_reps=1,
    incep_fid_images=4,
    search_rows=(2_000, 8_000),
    search_dim=256,
    search_queries=200,
    stream_rows=8_000,
    stream_dim=64,
    stream_chunk=1_000,
    stream_queries=200,
    trainer_res=16,
    trainer_batch=8,
    trainer_steps=10,
    trainer_eval_images=32,
    trainer_eval_batch=16,
    trainer_bank=64,
    probe_latent=(4, 4, 4),
    probe_size="tiny",
    probe_batch=8,
    probe_steps=3,
    probe_samples=4,
    probe_sample_steps=4,
)


# ------------------------------------------------------------------------------------------
# Rows, context, helpers
# ------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a measured case and whether it met its criterion."""

    check: str
    ok: bool
    figures: str
    criterion: str
    seconds: float = 0.0

    def line(self) -> str:
        status = "PASS" if self.ok else "FAIL"
        return (
            f"{status}  {self.check:<24} {self.figures}  [{self.criterion}] ({self.seconds:.1f} s)"
        )


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    tmp: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _count(n: int) -> str:
    """1000000 -> '1M', 100000 -> '100k', 2000 -> '2k'."""
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def rel(a: float, b: float) -> float:
    """|a - b| / |b| (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Set TF32 for cuBLAS and cuDNN inside the block (no effect on CPU)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def smooth_images(n: int, size: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """(n, 3, size, size) smooth random pictures in [-1, 1], made on ``device``, returned on CPU."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, n, 512):
        m = min(512, n - start)
        coarse = torch.rand(m, 3, 6, 6, generator=g, device=device) * 2 - 1
        img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        noise = torch.randn(m, 3, size, size, generator=g, device=device)
        out.append((img + 0.05 * noise).clamp(-1, 1).cpu())
    return torch.cat(out)


class _Clusters:
    """A fixed latent-like distribution: a Gaussian mixture on random rank-16 patches."""

    def __init__(self, dim: int, device: torch.device, clusters: int = 64, rank: int = 16):
        g = torch.Generator().manual_seed(1234)
        self.centers = torch.randn(clusters, dim, generator=g).to(device)
        self.bases = (torch.randn(clusters, rank, dim, generator=g) / math.sqrt(rank)).to(device)
        self.device, self.dim, self.rank = device, dim, rank

    def rows(self, n: int, seed: int) -> Tensor:
        g = torch.Generator(device=self.device).manual_seed(seed)
        k = self.centers.shape[0]
        which = torch.randint(0, k, (n,), generator=g, device=self.device)
        x = 0.05 * torch.randn(n, self.dim, generator=g, device=self.device)
        coef = torch.randn(n, self.rank, generator=g, device=self.device)
        order = torch.argsort(which)
        counts = torch.bincount(which, minlength=k).tolist()
        start = 0
        for c, m in enumerate(counts):  # one matmul per cluster, rows grouped by cluster
            if m:
                rows = order[start : start + m]
                x[rows] += self.centers[c] + coef[rows] @ self.bases[c]
            start += m
        return x


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """Write seeded random weights of the FID Inception architecture (folded conv layout).

    He-normal convolutions with zero biases keep activations at a steady scale through the 94
    ReLU layers, so the pool3 features are as well-conditioned as the real ones.
    """
    from ifid_callback.inception_graph import raw_state_dict_template

    if path.is_file():
        return path
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in raw_state_dict_template().items():
        if key.endswith(".conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
            state[key[: -len("weight")] + "bias"] = torch.zeros(shape[0])
    torch.save(state, path)
    return path


def inception(ctx: Context, precision: str = "fp32") -> nn.Module:
    from ifid_callback.inception import InceptionFeatures

    weights = random_inception_weights(ctx.tmp / "inception-random.pt")
    return InceptionFeatures(weights=weights, precision=precision)


def metric_feature(ctx: Context) -> nn.Module:
    if ctx.sizes.metric_feature == "inception":
        return inception(ctx)
    return RandomConvFeatures()


def sd_vae(seed: int = 0) -> nn.Module:
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**SD_VAE_CONFIG).eval()


def tiny_vae(seed: int = 0) -> nn.Module:
    from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyVAE(TinyVAEConfig()).eval()


def gpu_mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def faiss_state() -> str:
    """'gpu' (faiss with GPUs), 'cpu' (faiss without GPU support) or 'absent'."""
    try:
        import faiss
    except ImportError:
        return "absent"
    try:
        return "gpu" if faiss.get_num_gpus() > 0 else "cpu"
    except AttributeError:
        return "cpu"


# ------------------------------------------------------------------------------------------
# Checks: each is a generator of rows; an exception ends that check with a FAIL row
# ------------------------------------------------------------------------------------------


def _run_metric(
    vae: nn.Module,
    feature: nn.Module,
    images: Tensor,
    device: torch.device,
    bf16: bool,
    batch: int,
) -> dict[str, float]:
    """iFID/rFID of ``images`` against a bank of their own latents (self excluded by id)."""
    from ifid_callback import InterpolatedFID, LatentBank

    bank = LatentBank(capacity=len(images), device=device)
    metric = InterpolatedFID(vae=vae, feature=feature, bank=bank, seed=0).to(device)
    ids = torch.arange(len(images))
    x = images.to(device)
    with autocast(device, bf16), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            for s in range(0, len(x), batch):
                bank.add(metric.vae.encode(x[s : s + batch]), ids=ids[s : s + batch].to(device))
        for s in range(0, len(x), batch):
            metric.update(x[s : s + batch], ids=ids[s : s + batch])
        out = metric.compute()
    return {k: float(v) for k, v in out.items()}


def check_metric(ctx: Context) -> Iterator[Row]:
    """iFID/rFID on the device (fp32, bf16 autocast) against a CPU fp32 reference."""
    s = ctx.sizes
    tolerance = {"fp32": 0.01, "bf16": 0.05}
    for name, build, res in (("sd-vae", sd_vae, s.sd_res), ("tiny-vae", tiny_vae, s.tiny_res)):
        t0 = time.perf_counter()
        images = smooth_images(s.metric_images, res, seed=11)
        vae_cpu = build()
        feature = metric_feature(ctx)
        ref = _run_metric(vae_cpu, feature, images, torch.device("cpu"), False, s.metric_batch)
        ref_s = time.perf_counter() - t0
        for precision in ("fp32", "bf16"):
            t1 = time.perf_counter()
            if precision == "fp32" and not ctx.cuda:
                got = ref  # the device is the CPU: the reference is this run
            else:
                got = _run_metric(
                    copy.deepcopy(vae_cpu).to(ctx.device),
                    copy.deepcopy(feature),
                    images,
                    ctx.device,
                    precision == "bf16",
                    s.metric_batch,
                )
                ctx.sync()
            dev = max(rel(got[k], ref[k]) for k in ("ifid", "rfid"))
            tol = tolerance[precision]
            yield Row(
                f"metric {name} {precision}",
                dev <= tol and all(math.isfinite(v) for v in got.values()),
                f"{res}px n={s.metric_images}: ifid {got['ifid']:.4g} rfid {got['rfid']:.4g} vs "
                f"cpu fp32 {ref['ifid']:.4g}/{ref['rfid']:.4g}, max rel dev {dev:.2e}"
                + (" (device is the CPU: the reference itself)" if got is ref else ""),
                f"rel dev <= {tol:g}",
                time.perf_counter() - t1 + (ref_s if precision == "fp32" else 0.0),
            )
        del vae_cpu


def _copy_counts(ctx: Context, metric, images: Tensor) -> dict[str, object]:
    """Profile one ``metric.update``: host<->device copies (CUDA) and host scalar reads."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    ctx.sync()
    with profile(activities=activities, with_stack=True) as prof:
        metric.update(images)
        ctx.sync()
    reads: Counter[str] = Counter()
    for evt in prof.events():
        if evt.name == "aten::_local_scalar_dense":
            reads[_library_frame(evt)] += 1
    out: dict[str, object] = {"reads": sum(reads.values()), "sources": reads}
    if ctx.cuda:
        trace = ctx.tmp / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
        copies = [
            e
            for e in events
            if e.get("cat") == "gpu_memcpy" and ("HtoD" in e["name"] or "DtoH" in e["name"])
        ]
        sizes = [int(e.get("args", {}).get("bytes", 0)) for e in copies]
        out.update(copies=len(copies), bytes=sum(sizes), largest=max(sizes, default=0))
    return out


def _library_frame(event) -> str:
    """The innermost function of this package that led to a profiler event, 'file.py:line name'."""
    parent = event.cpu_parent
    while parent is not None:
        m = re.search(r"ifid_callback[/\\](.+?)\((\d+)\): (\S+)", parent.name)
        if m:
            return f"{m.group(1)}:{m.group(2)} {m.group(3)}"
        parent = parent.cpu_parent
    return "outside the package"


def check_copies(ctx: Context) -> Iterator[Row]:
    """Host<->device copies and host syncs of one metric.update, at batch B and 2B."""
    from ifid_callback import InterpolatedFID, LatentBank

    t0 = time.perf_counter()
    s = ctx.sizes
    vae = tiny_vae().to(ctx.device)
    bank = LatentBank(capacity=64, device=ctx.device)
    metric = InterpolatedFID(vae=vae, feature=metric_feature(ctx), bank=bank).to(ctx.device)
    images = smooth_images(2 * s.metric_batch, s.tiny_res, seed=3).to(ctx.device)
    with torch.no_grad():
        bank.add(metric.vae.encode(smooth_images(64, s.tiny_res, seed=4).to(ctx.device)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(images)  # warm-up: index build, cuDNN autotuning, lazy init
        one = _copy_counts(ctx, metric, images[: s.metric_batch])
        two = _copy_counts(ctx, metric, images)
    top = ", ".join(f"{k} x{v}" for k, v in one["sources"].most_common(6))
    constant = one["reads"] == two["reads"] and one.get("copies") == two.get("copies")
    if ctx.cuda:
        figures = (
            f"per update: {one['copies']} H<->D copies ({one['bytes']} B, largest "
            f"{one['largest']} B) at B={s.metric_batch}, {two['copies']} at B={2 * s.metric_batch}; "
            f"{one['reads']} host syncs: {top}"
        )
        ok = constant and int(two["largest"]) <= SMALL_COPY_BYTES
        crit = f"count independent of B, no copy > {SMALL_COPY_BYTES // 1024} KiB"
    else:
        figures = (
            f"copies n/a on CPU; {one['reads']} scalar reads per update at B={s.metric_batch}, "
            f"{two['reads']} at B={2 * s.metric_batch} (each a sync on CUDA): {top}"
        )
        ok = constant
        crit = "count independent of B"
    yield Row("metric copies", ok, figures, crit, time.perf_counter() - t0)


def _featurize(ctx: Context, net: nn.Module, x: Tensor) -> Tensor:
    """Inception features of images in [-1, 1]: the whole pipeline (resize to 299), or in the
    tiny mode the network alone at a smaller side (75, its smallest input), to keep it fast."""
    side = ctx.sizes.incep_side
    if side == 299:
        return net(x)
    with torch.inference_mode():
        small = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)
        return net.forward_normalized(small).clone()


def _timed_features(ctx: Context, net: nn.Module, images: Tensor, batch: int, reps: int) -> float:
    """Images/s of ``net`` on ``images`` (on the device) in batches of ``batch``."""
    x = images[:batch].to(ctx.device)
    _featurize(ctx, net, x)  # warm-up (cuDNN algorithm search)
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        _featurize(ctx, net, x)
    ctx.sync()
    return batch * reps / (time.perf_counter() - t0)


def _features(ctx: Context, net: nn.Module, images: Tensor, batch: int = 256) -> Tensor:
    out = [
        _featurize(ctx, net, images[s : s + batch].to(ctx.device)).double().cpu()
        for s in range(0, len(images), batch)
    ]
    return torch.cat(out)


def _fid(a: Tensor, b: Tensor) -> float:
    from ifid_callback.functional.frechet import frechet_distance, statistics_of

    return float(frechet_distance(*statistics_of(a), *statistics_of(b)))


def check_inception(ctx: Context) -> Iterator[Row]:
    """FID Inception on the device: agreement with CPU, images/s, FID deviation per precision."""
    s = ctx.sizes
    t0 = time.perf_counter()
    fp32 = inception(ctx).to(ctx.device)
    bf16 = inception(ctx, "bf16").to(ctx.device)
    images = smooth_images(max(s.incep_batches), 256, seed=21, device=ctx.device)

    # 1. The same weights on CPU and on the device (TF32 off): the architecture runs alike.
    if ctx.cuda:
        few = images[: s.incep_agree_images]
        with tf32(False):
            on_dev = _features(ctx, fp32, few)
        on_cpu = _features(ctx.__class__(torch.device("cpu"), s, ctx.tmp), inception(ctx), few)
        dev = float((on_dev - on_cpu).abs().max() / on_cpu.abs().max())
        yield Row(
            "inception cpu agreement",
            dev <= 1e-3,
            f"max |f_dev - f_cpu| / max |f_cpu| = {dev:.2e} on {len(few)} images (fp32, TF32 off)",
            "<= 1e-3",
            time.perf_counter() - t0,
        )
    else:
        yield Row("inception cpu agreement", True, "n/a on CPU (the device is the CPU)", "-", 0.0)

    # 2. Throughput at each batch size and precision (images 256x256 -> 299, preprocess included).
    t1 = time.perf_counter()
    modes = [("fp32", fp32, False), ("tf32", fp32, True), ("bf16", bf16, False)]
    if not ctx.cuda:
        modes = [m for m in modes if m[0] != "tf32"]
    speeds = []
    with torch.inference_mode():
        for batch in s.incep_batches:
            for label, net, allow in modes:
                with tf32(allow):
                    speeds.append(
                        f"{label}@{batch} {_timed_features(ctx, net, images, batch, s.incep_reps):.0f}"
                    )
    mem = f", peak {gpu_mb(torch.cuda.max_memory_allocated(ctx.device))}" if ctx.cuda else ""
    yield Row(
        "inception images/s",
        True,
        ", ".join(speeds)
        + ("" if ctx.cuda else " (tf32 n/a on CPU)")
        + ("" if s.incep_side == 299 else f" (network alone at {s.incep_side}px)")
        + mem,
        "measured",
        time.perf_counter() - t1,
    )

    # 3. FID between two fixed sets in each precision, against fp32 (TF32 off).
    t2 = time.perf_counter()
    n = s.incep_fid_images
    real = smooth_images(n, 256, seed=31, device=ctx.device)
    fake = (smooth_images(n, 256, seed=32, device=ctx.device) * 0.8 + 0.1).clamp(-1, 1)
    fids = {}
    with torch.inference_mode():
        for label, net, allow in modes:
            with tf32(allow):
                fids[label] = _fid(_features(ctx, net, real), _features(ctx, net, fake))
    devs = {k: rel(v, fids["fp32"]) for k, v in fids.items() if k != "fp32"}
    limits = {"tf32": 0.01, "bf16": 0.05}
    yield Row(
        "inception fid deviation",
        all(devs[k] <= limits[k] for k in devs),
        f"n={n}+{n}: fid fp32 {fids['fp32']:.4g}, "
        + ", ".join(f"{k} {fids[k]:.4g} (rel {devs[k]:.1e})" for k in devs)
        + ("" if ctx.cuda else "; tf32 n/a on CPU"),
        ", ".join(f"{k} <= {limits[k]:g}" for k in devs),
        time.perf_counter() - t2,
    )


def _exact_top1(ctx: Context, bank_rows: Iterator[Tensor], queries: Tensor) -> Tensor:
    """Ids of each query's exact cosine nearest neighbour over streamed bank chunks."""
    q = F.normalize(queries.to(ctx.device), dim=1)
    best = torch.full((len(q),), -2.0, device=ctx.device)
    best_id = torch.zeros(len(q), dtype=torch.long, device=ctx.device)
    offset = 0
    for chunk in bank_rows:
        b = F.normalize(chunk.to(ctx.device), dim=1)
        sim, pos = (q @ b.T).max(dim=1)
        better = sim > best
        best = torch.where(better, sim, best)
        best_id = torch.where(better, pos + offset, best_id)
        offset += len(chunk)
    return best_id.cpu()


def check_search(ctx: Context) -> Iterator[Row]:
    """Torch exact and faiss IVF-SQ8 at each bank size: build/search time, recall@1, memory."""
    from ifid_callback.index import NeighborIndex

    s = ctx.sizes
    state = faiss_state()
    gen = _Clusters(s.search_dim, ctx.device)
    queries = gen.rows(s.search_queries, seed=2)
    for n in s.search_rows:
        t0 = time.perf_counter()
        bank = gen.rows(n, seed=1)
        ctx.sync()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
            base = torch.cuda.memory_allocated(ctx.device)
        tb = time.perf_counter()
        exact = NeighborIndex("exact", device=ctx.device).build(bank)
        ctx.sync()
        ts = time.perf_counter()
        _, truth = exact.search(queries, k=1)
        ctx.sync()
        te = time.perf_counter()
        truth = truth[:, 0].cpu()
        extra = ""
        ok = True
        if ctx.cuda:
            extra = f", peak GPU +{gpu_mb(torch.cuda.max_memory_allocated(ctx.device) - base)}"
            if n == s.search_rows[0]:  # the device search agrees with the CPU search
                cpu = NeighborIndex("exact").build(bank.cpu())
                _, on_cpu = cpu.search(queries[:200].cpu(), k=1)
                agree = float((on_cpu[:, 0] == truth[:200]).double().mean())
                extra += f", agrees with CPU on {agree:.3f} of 200"
                ok = agree >= 0.99
        yield Row(
            f"search exact {_count(n)}",
            ok,
            f"{n} x {s.search_dim}, {len(queries)} queries on {ctx.device.type}: build "
            f"{ts - tb:.2f} s, search {te - ts:.2f} s, {exact.memory_bytes / 2**20:.0f} MiB{extra}",
            "agrees with CPU >= 0.99" if ctx.cuda and n == s.search_rows[0] else "measured",
            time.perf_counter() - t0,
        )
        del exact
        if state == "absent":
            yield Row(
                f"search faiss {_count(n)}",
                False,
                "faiss is not installed",
                "faiss importable",
                0.0,
            )
            continue
        t1 = time.perf_counter()
        if ctx.cuda:
            free0 = torch.cuda.mem_get_info(ctx.device)[0]
        index = NeighborIndex("ivf-sq8", device=ctx.device).build(bank)
        tb = time.perf_counter() - t1
        where = (
            "faiss-GPU"
            if index._gpu
            else ("faiss CPU (no faiss GPU build)" if ctx.cuda else "faiss CPU")
        )
        t2 = time.perf_counter()
        _, found = index.search(queries, k=1)
        ctx.sync()
        tq = time.perf_counter() - t2
        recall = float((found[:, 0].cpu() == truth).double().mean())
        gpu_extra = ""
        if ctx.cuda and index._gpu:
            gpu_extra = f", GPU {gpu_mb(free0 - torch.cuda.mem_get_info(ctx.device)[0])}"
        threads = torch.get_num_threads()
        yield Row(
            f"search faiss {_count(n)}",
            recall >= 0.95,
            f"{where}, {index.kind}, {threads} threads: build {tb:.2f} s, search {tq:.2f} s, "
            f"recall@1 {recall:.3f}, {index.memory_bytes / 2**20:.0f} MiB "
            f"({index.memory_per_vector:.0f} B/vec){gpu_extra}",
            "recall@1 >= 0.95",
            time.perf_counter() - t1,
        )
        del index, bank
        if ctx.cuda:
            torch.cuda.empty_cache()


class RssPeak:
    """Peak resident memory of this process inside the block, sampled every 20 ms (Linux)."""

    def __enter__(self) -> RssPeak:
        import threading

        self.before = self.peak = _rss_bytes()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def grown(self) -> int:
        return self.peak - self.before


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: report no growth rather than fail
        return 0


def stream_budget(rows: int, dim: int) -> int:
    """Index memory allowed for ``rows`` x ``dim``: 1 GiB at ImageNet-train x 4096, scaled.

    At full size this is exactly 1 GiB. The fixed tables of an IVF index (the coarse centroids,
    ``nlist x dim`` floats, and up to 256 codewords per dimension) take about 1/15 of it there;
    on reduced sizes they shrink more slowly than the rows, so the budget is the per-row share
    left after them at full size, times the rows, plus the tables this size needs.
    """
    from ifid_callback.index import choose_nlist

    fixed_full = (choose_nlist(IMAGENET_ROWS) + 256) * LATENT_DIM * 4
    per_row = (IMAGENET_BUDGET_BYTES - fixed_full) / IMAGENET_ROWS * dim / LATENT_DIM
    return int(rows * per_row) + (choose_nlist(rows) + 256) * dim * 4


def check_stream(ctx: Context) -> Iterator[Row]:
    """Streaming build of a compressed reference sized like ImageNet-train within 1 GiB (scaled)."""
    from ifid_callback.index import NeighborIndex

    s = ctx.sizes
    t0 = time.perf_counter()
    n, dim, chunk = s.stream_rows, s.stream_dim, s.stream_chunk
    budget = stream_budget(n, dim)
    gen = _Clusters(dim, ctx.device)

    def chunks() -> Iterator[Tensor]:
        for i, start in enumerate(range(0, n, chunk)):
            yield gen.rows(min(chunk, n - start), seed=100 + i)

    with RssPeak() as rss:
        index = NeighborIndex("auto", device=ctx.device, memory_budget_bytes=budget)
        index.build_streaming(chunks(), total=n)
    build_s = time.perf_counter() - t0
    queries = gen.rows(s.stream_queries, seed=7)
    _, found = index.search(queries, k=1)
    truth = _exact_top1(ctx, chunks(), queries)
    recall = float((found[:, 0].cpu() == truth).double().mean())
    held = index.memory_bytes
    yield Row(
        "stream imagenet-like",
        held <= budget,
        f"{n} x {dim} ({n * dim * 4 / 2**30:.2f} GiB fp32) in chunks of {chunk}: {index.kind}, "
        f"build {build_s:.1f} s, index {held / 2**20:.1f} MiB of budget {budget / 2**20:.1f} MiB "
        f"({index.memory_per_vector:.0f} B/vec), recall@1 {recall:.3f}, host memory "
        f"+{rss.grown / 2**20:.0f} MiB during the build",
        "index <= budget",
        time.perf_counter() - t0,
    )


def _posterior(out):
    return getattr(out, "latent_dist", out)


def _images(out) -> Tensor:
    return getattr(out, "sample", out)


def check_trainer(ctx: Context) -> Iterator[Row]:
    """One Lightning run with IFIDCallback: per-step overhead, evaluation time, peak memory."""
    try:
        from lightning.pytorch import Callback, LightningModule, Trainer
    except ImportError:  # the standalone package
        from pytorch_lightning import Callback, LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from ifid_callback.integrations.lightning import IFIDCallback

    s = ctx.sizes
    t0 = time.perf_counter()
    vae = sd_vae() if s.trainer_vae == "sd" else tiny_vae()

    class VAEModule(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def training_step(self, batch, batch_idx):
            x = batch[0]
            posterior = _posterior(self.vae.encode(x))
            recon = _images(self.vae.decode(posterior.sample()))
            loss = F.mse_loss(recon.float(), x) + 1e-6 * posterior.kl().mean()
            return {"loss": loss, "latents": posterior.mean.detach()}

        def validation_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return torch.optim.Adam(self.vae.parameters(), lr=1e-4)

    timings: dict[str, list[float]] = {"step": [], "observe": [], "evaluate": []}
    peaks: dict[str, float] = {}

    def timed(fn: Callable, key: str) -> Callable:
        def wrapper(*args, **kwargs):
            ctx.sync()
            if key == "evaluate" and ctx.cuda:
                peaks["train"] = torch.cuda.max_memory_allocated(ctx.device)
                torch.cuda.reset_peak_memory_stats(ctx.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            ctx.sync()
            timings[key].append(time.perf_counter() - start)
            if key == "evaluate" and ctx.cuda:
                peaks["eval"] = torch.cuda.max_memory_allocated(ctx.device)
            return out

        return wrapper

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            ctx.sync()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ctx.sync()
            timings["step"].append(time.perf_counter() - self.start)

    eval_images = smooth_images(s.trainer_eval_images, s.trainer_res, seed=41, device=ctx.device)
    train_images = smooth_images(s.trainer_batch * s.trainer_steps, s.trainer_res, seed=42)
    feature = metric_feature(ctx) if s.trainer_vae == "sd" else RandomConvFeatures()
    callback = IFIDCallback(
        vae=vae,
        eval_images=eval_images,
        feature=feature,
        bank_capacity=s.trainer_bank,
        eval_batch_size=s.trainer_eval_batch,
        log_grid=False,
    )
    del eval_images  # the monitor keeps its own copy (10k images at 256x256: 7.9 GB)
    monitor = callback.monitor
    monitor.observe = timed(monitor.observe, "observe")
    monitor.evaluate = timed(monitor.evaluate, "evaluate")
    precision = "bf16-mixed"
    trainer = Trainer(
        accelerator="gpu" if ctx.cuda else "cpu",
        devices=1,
        precision=precision,
        max_steps=s.trainer_steps,
        val_check_interval=s.trainer_steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback, StepTimer()],
        default_root_dir=str(ctx.tmp / "lightning"),
    )
    train = DataLoader(TensorDataset(train_images), batch_size=s.trainer_batch, shuffle=False)
    val = DataLoader(TensorDataset(train_images[: s.trainer_batch]), batch_size=s.trainer_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(VAEModule(), train, val)
    if not timings["evaluate"]:
        raise RuntimeError("the callback never evaluated")
    result = monitor.last_result
    skip = min(3, len(timings["step"]) - 1)  # warm-up steps
    steps = sorted(timings["step"][skip:])
    observes = sorted(timings["observe"][skip:])
    step_s = steps[len(steps) // 2]
    observe_s = observes[len(observes) // 2]
    overhead = 100.0 * observe_s / max(step_s - observe_s, 1e-9)
    eval_s = timings["evaluate"][-1]
    per_5k = 100.0 * eval_s / (5000 * step_s)
    mem = (
        f", peak GPU train {gpu_mb(peaks['train'])} / eval {gpu_mb(peaks['eval'])}"
        if ctx.cuda
        else ", GPU memory n/a on CPU"
    )
    finite = all(math.isfinite(float(result[k])) for k in ("ifid", "rfid"))
    vae_name = "SD-VAE" if s.trainer_vae == "sd" else "TinyVAE"
    # A timing target holds on the GPU it is meant for; on a shared CPU it is only reported.
    yield Row(
        "lightning overhead",
        (overhead <= 2.0 or not ctx.cuda) and finite,
        f"{vae_name} {s.trainer_res}px batch {s.trainer_batch}, {precision}: step {step_s * 1e3:.1f} ms, "
        f"observe {observe_s * 1e3:.2f} ms ({overhead:.2f} % of a step)",
        "observe <= 2 % of a step" if ctx.cuda else "measured (the 2 % target is for the GPU)",
        time.perf_counter() - t0,
    )
    yield Row(
        "lightning evaluation",
        finite,
        f"{s.trainer_eval_images} images at {s.trainer_res}px: {eval_s:.1f} s "
        f"(ifid {float(result['ifid']):.4g}, rfid {float(result['rfid']):.4g}); one evaluation "
        f"every 5k steps costs {per_5k:.2f} % of training time{mem}",
        "finite iFID/rFID",
        eval_s,
    )


def check_probe(ctx: Context) -> Iterator[Row]:
    """SiT probe: forward agreement with CPU, training steps and sampling on the device."""
    from ifid_callback.probes import ProbeTrainConfig, SiT, SiTConfig, train_probe

    s = ctx.sizes
    c, h, w = s.probe_latent
    t0 = time.perf_counter()
    if ctx.cuda:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = SiT(SiTConfig.from_name(s.probe_size, input_size=h, in_channels=c)).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, c, h, w, generator=g)
        t = torch.rand(4, generator=g)
        with torch.no_grad(), tf32(False):
            ref = model(x, t)
            got = copy.deepcopy(model).to(ctx.device)(x.to(ctx.device), t.to(ctx.device)).cpu()
        dev = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        yield Row(
            "probe cpu agreement",
            dev <= 1e-3,
            f"SiT-{s.probe_size} forward on {h}x{w}x{c}: max rel dev {dev:.1e} (TF32 off)",
            "<= 1e-3",
            time.perf_counter() - t0,
        )
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(max(4 * s.probe_batch, 64), c, h, w, generator=g)
    config = ProbeTrainConfig(
        size=s.probe_size,
        steps=s.probe_steps,
        batch_size=s.probe_batch,
        log_every=s.probe_steps,
        checkpoint_every=s.probe_steps,
        device=str(ctx.device),
    )
    t1 = time.perf_counter()
    probe = train_probe(latents, None, config, out_dir=None, progress=False)
    ctx.sync()
    train_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    samples = probe.sample(
        s.probe_samples,
        steps=s.probe_sample_steps,
        generator=torch.Generator(device=ctx.device).manual_seed(0),
    )
    ctx.sync()
    sample_s = time.perf_counter() - t2
    loss = probe.loss_history[-1][1] if probe.loss_history else float("nan")
    ok = (
        math.isfinite(loss)
        and samples.shape == (s.probe_samples, c, h, w)
        and bool(torch.isfinite(samples).all())
    )
    yield Row(
        "probe train+sample",
        ok,
        f"SiT-{s.probe_size} on {c}x{h}x{w}, batch {s.probe_batch}: {s.probe_steps} steps in "
        f"{train_s:.2f} s ({train_s / s.probe_steps * 1e3:.0f} ms/step incl. set-up), loss "
        f"{loss:.3f}; {s.probe_samples} samples x {s.probe_sample_steps} Euler steps in {sample_s:.2f} s",
        "finite loss and samples",
        time.perf_counter() - t1,
    )


# In order of what a cut-short run should have measured first (faiss on CPU is the slowest).
CHECKS: dict[str, Callable[[Context], Iterator[Row]]] = {
    "metric": check_metric,
    "copies": check_copies,
    "inception": check_inception,
    "trainer": check_trainer,
    "probe": check_probe,
    "search": check_search,
    "stream": check_stream,
}


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------


def run_check(name: str, fn: Callable[[Context], Iterator[Row]], ctx: Context) -> list[Row]:
    """Run one check; an exception becomes a FAIL row and the remaining checks still run."""
    rows: list[Row] = []
    start = time.perf_counter()
    try:
        for row in fn(ctx):
            rows.append(row)
            print(row.line())
    except Exception as err:  # isolate: any failure of this check is reported, not raised
        where = traceback.extract_tb(err.__traceback__)[-1]
        message = f"{type(err).__name__}: {err}".replace("\n", " ")[:400]
        row = Row(
            f"{name} (error)",
            False,
            f"{message} at {Path(where.filename).name}:{where.lineno}",
            "no exception",
            time.perf_counter() - start,
        )
        rows.append(row)
        print(row.line())
        traceback.print_exc(file=sys.stderr)
    finally:
        if ctx.cuda:
            torch.cuda.empty_cache()
    return rows


def environment(ctx: Context) -> str:
    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"device {ctx.device}",
    ]
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        parts.append(
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
        )
    parts.append(f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    for module in ("diffusers", "faiss", "lightning"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except Exception:  # a missing optional package is reported, not raised
            parts.append(f"{module} absent")
    parts.append(f"faiss GPU: {'yes' if faiss_state() == 'gpu' else 'no'}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="reduced sizes (CPU, minutes)")
    size.add_argument("--tiny", action="store_true", help="smallest sizes (the test suite)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(CHECKS)}")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds: interrupt the check running then, skip the rest, still print the table",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu --small (or --tiny).")
        return 2
    sizes = TINY if args.tiny else SMALL if args.small else FULL
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CHECKS)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {list(CHECKS)}")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(device=device, sizes=sizes, tmp=Path(tmp))
        header = f"gpu_check ({sizes.name} sizes): {environment(ctx)}"
        print(header)
        rows: list[Row] = []
        if args.time_limit:
            _arm_time_limit(args.time_limit)
        for name in names:
            if args.time_limit and time.perf_counter() - start >= args.time_limit:
                rows.append(Row(name, False, "not run: time limit reached", "ran", 0.0))
                print(rows[-1].line())
                continue
            rows += run_check(name, CHECKS[name], ctx)
            if args.json:  # after every check, so a run cut short still leaves its rows
                write_json(Path(args.json), header, time.perf_counter() - start, rows)
    total = time.perf_counter() - start
    if args.time_limit:
        signal.alarm(0)

    width = max(len(r.check) for r in rows)
    print()
    print(header)
    print(f"{'result':<6} {'check':<{width}}  figures  [criterion]")
    print("-" * 100)
    for row in rows:
        status = "PASS" if row.ok else "FAIL"
        print(f"{status:<6} {row.check:<{width}}  {row.figures}  [{row.criterion}]")
    failed = [r.check for r in rows if not r.ok]
    print("-" * 100)
    print(
        f"summary: {len(rows) - len(failed)} of {len(rows)} lines passed in {total:.0f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    if args.json:
        write_json(Path(args.json), header, total, rows)
    return 1 if failed else 0


class TimeLimitReached(Exception):
    """Raised in the check running when ``--time-limit`` expires (it becomes a FAIL line)."""


def _arm_time_limit(seconds: float) -> None:
    def expire(signum: int, frame: object) -> None:
        raise TimeLimitReached(f"time limit of {seconds:.0f} s reached during this check")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, int(seconds)))


def write_json(path: Path, header: str, seconds: float, rows: list[Row]) -> None:
    payload = {"header": header, "seconds": seconds, "rows": [r.__dict__ for r in rows]}
    path.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    sys.exit(main())
