"""Running one evaluation: the evaluation images through one set of VAE weights, into the metric.

The real-image statistics of the evaluation set are computed on the first evaluation and kept
(also across checkpoints), so later evaluations, and every set of weights within one evaluation
(training and averaged weights), share them and pass only their decodes through the one feature
network. With a statistics cache (:mod:`~ifid_callback.stats_cache`) the first evaluation of a
new run reads them from disk when an earlier run stored them for the same images and network.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from ifid_callback.distributed import all_reduce_sum, gather_objects
from ifid_callback.metric import InterpolatedFID
from ifid_callback.monitor.eval_set import EvalImages
from ifid_callback.monitor.weights import eval_mode
from ifid_callback.stats_cache import RealStatsSlot, images_digest, resolve_stats_cache
from ifid_callback.vae import VAEAdapter

__all__ = ["Evaluator", "scalar_metrics"]


class Evaluator:
    """Evaluates VAE weights on the fixed evaluation images with one metric.

    Args:
        metric: the monitor's metric (``reset_real_features=False``: real statistics cached).
        eval_set: the evaluation images.
        quiet: context-manager factory that silences latent collection while the VAE runs here.
        stats_cache: where the evaluation images' real statistics are cached on disk (see
            :func:`~ifid_callback.stats_cache.resolve_stats_cache`; None: nowhere).
    """

    def __init__(
        self,
        metric: InterpolatedFID,
        eval_set: EvalImages,
        quiet: Callable[[], contextlib.AbstractContextManager] | None = None,
        stats_cache: Any = None,
    ) -> None:
        self.metric = metric
        self.eval_set = eval_set
        self.quiet = quiet
        self.stats_cache = resolve_stats_cache(stats_cache)
        # Global (all-rank) real sums: after the first evaluation, or restored from a checkpoint
        # (then pending until the next evaluation installs them in the metric).
        self.real_global: dict[str, Tensor] | None = None
        self.pending_real: dict[str, Tensor] | None = None

    @contextlib.contextmanager
    def using(self, adapter: VAEAdapter | None) -> Iterator[VAEAdapter]:
        """The metric driving ``adapter``'s VAE (default: its own), in eval mode, hooks quiet."""
        own = self.metric.vae
        adapter = adapter or own
        self.metric.vae = adapter
        try:
            with eval_mode(adapter.modules(), self.quiet), torch.no_grad():
                yield adapter
        finally:
            self.metric.vae = own

    def check_vae(self, device: torch.device) -> tuple[int, ...]:
        """One encode/decode round trip of an evaluation image with the metric's own VAE on
        ``device``, in eval mode, the hooks silent and the global random state untouched (what
        the VAE makes of the evaluation images, checked when the monitor is built)."""
        vae = self.metric.vae
        cuda = [device] if device.type == "cuda" else []
        with eval_mode(vae.modules(), self.quiet), torch.no_grad():
            with torch.random.fork_rng(devices=cuda):
                gen = torch.Generator(device=device).manual_seed(0)
                return self.eval_set.check_vae(
                    lambda x: vae.encode(x, generator=gen), vae.decode, device, vae.modules()
                )

    def run(
        self, adapter: VAEAdapter | None, rank: int, world: int, device: torch.device
    ) -> dict[str, float]:
        """Every scalar the metric computes for ``adapter``'s weights (default: its own VAE).

        Collective under torch.distributed: each rank updates with its share of the images and
        the metric's states are summed at ``compute``.
        """
        first_time = self.real_global is None
        with self.using(adapter):
            self.metric.reset()
            restored = self.pending_real is not None
            self._apply_pending_real(rank)
            # Statistics restored from a checkpoint come first; the cache serves a fresh run.
            slot = self._cache_slot() if first_time and not restored else None
            # Global positions seed each image's random choices: equal on any world size.
            positions = torch.arange(rank, self.eval_set.num, world)
            done = 0
            for batch in self.eval_set.batches(rank, world):
                part = positions[done : done + batch.shape[0]]
                self.metric.update(batch.to(device, torch.float32), positions=part)
                done += batch.shape[0]
            values = self.metric.compute()
        if first_time:
            self.real_global = self._global_real_statistics(world)
            if slot is not None and not slot.hit:
                slot.store(self._with_global_rows(self.real_global, slot.need_rows, world))
        return scalar_metrics(values)

    # ------------------------------------------------------------------ real statistics
    def _apply_pending_real(self, rank: int) -> None:
        """Install real statistics restored from a checkpoint (global sums; rank 0 holds them)."""
        if self.pending_real is None:
            return
        pending, self.pending_real = self.pending_real, None
        # The metric skips the real-image pass once its real statistics are cached.
        self.metric.load_real_statistics(
            {k: (v if rank == 0 else torch.zeros_like(v)) for k, v in pending.items()}
        )
        self.real_global = {k: v.clone() for k, v in pending.items()}

    def _cache_slot(self) -> RealStatsSlot | None:
        """The evaluation images' cache entry, installed in the metric when present (then the
        first evaluation skips the real-image pass too); None without a cache. Collective."""
        if self.stats_cache is None:
            return None
        content, count = images_digest(self.eval_set.batches(0, 1))
        # Evaluation image i (in the evaluation set's order) has position i on any world size.
        slot = RealStatsSlot(self.stats_cache, self.metric, content, count, "eval set order")
        slot.install()
        return slot

    def _with_global_rows(self, sums: dict[str, Tensor], rows: bool, world: int) -> dict:
        """``sums`` plus, with ``rows``, every rank's real rows in position order (a collective
        under torch.distributed)."""
        if not rows:
            return sums
        local = self.metric.real_statistics(per_image=True)
        parts = [(local["real_feature_rows"].cpu(), local["real_row_positions"].cpu())]
        if world > 1:
            parts = gather_objects(parts[0])
        features = torch.cat([f for f, _ in parts])
        positions = torch.cat([p for _, p in parts])
        order = positions.argsort()
        return {
            **sums,
            "real_feature_rows": features[order],
            "real_row_positions": positions[order],
        }

    def _global_real_statistics(self, world: int) -> dict[str, Tensor]:
        stats = self.metric.real_statistics()
        if world > 1:
            for key, value in stats.items():
                stats[key] = all_reduce_sum(value)
        return {key: value.cpu() for key, value in stats.items()}

    def real_state(self) -> dict[str, Tensor] | None:
        """Copies of the cached real statistics for a checkpoint (None before any)."""
        real = self.real_global if self.real_global is not None else self.pending_real
        return {k: v.clone() for k, v in real.items()} if real is not None else None

    def load_real_state(self, real: Mapping[str, Any] | None) -> None:
        """Forget the metric's real statistics; ``real`` is installed at the next evaluation."""
        self.metric.load_real_statistics(None)
        self.metric.reset()
        self.real_global = None
        self.pending_real = (
            {k: torch.as_tensor(v).clone() for k, v in real.items()} if real is not None else None
        )


# Keys whose value may be +inf: the PSNR of pixel-exact reconstructions (zero error) is +inf, as
# in torchmetrics, and means "lossless". Every other value, and NaN or -inf anywhere, is an error.
MAY_BE_PLUS_INF = frozenset({"psnr"})


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of ``metric.compute()`` as floats.

    ``"psnr"`` may be +inf (lossless reconstructions); any other non-finite value is an error
    naming its key.
    """
    out = {}
    for key, value in values.items():
        if isinstance(value, Tensor) and value.numel() != 1:
            continue  # not a number to log
        out[key] = float(value)
        if math.isfinite(out[key]) or (key in MAY_BE_PLUS_INF and out[key] == math.inf):
            continue
        if key in MAY_BE_PLUS_INF:
            raise ValueError(
                f"{key} is {out[key]}: the reconstruction scores are not defined; check that "
                "the decodes and the evaluation images are finite."
            )
        raise ValueError(
            f"{key} is {out[key]}: the features of the evaluation images or decodes are "
            "degenerate; check the VAE and the feature network."
        )
    return out
