"""Whether the query latents and the reference rows are on one scale: the per-channel mean and
standard deviation of the queries, accumulated over batches until enough latents were seen,
against those of a spread sample of the reference rows.

A bank stored as a diffusion model consumes latents (``z * 0.18215`` for SD, ``z * 0.13025`` for
SDXL, ``(z - 0.0609) * 1.5305`` for SD3, ``(z - 0.1159) * 0.3611`` for FLUX) passes every shape
check, but interpolation then mixes vectors of unlike size. Such a bank is an affine map of the
right one, which moves the pooled per-channel standard deviation by the scale factor (>= 1.53x
either way for all of these) or the channel means by whole standard deviations; images of other
content, or posterior samples of a trained VAE against its means, move them far less. The
decision waits for :data:`MIN_QUERY_ROWS` query latents, so one unusual first batch (a
low-contrast image) decides nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ifid_callback.functional.channel_norm import ChannelStatistics, channel_statistics

# Query latents accumulated (per rank) before deciding: the statistics of a few images say more
# about those images than about the encoder's scale.
MIN_QUERY_ROWS = 64
# Pooled std of the queries over the reference's beyond which the scales differ; the smallest
# realistic factor is SD3's 1.5305 (1 / 1.5305 = 0.65); other images of one family gave at most
# 1.11 (and offsets below 0.09) over 64 query latents in tests/test_scale_check.py's families.
STD_RATIO_LIMIT = 1.3
# RMS difference of the channel means, in pooled reference standard deviations, beyond which the
# latents are shifted (a shift without a scale; all realistic maps above also scale).
OFFSET_LIMIT = 1.0


class ScaleMismatch(NamedTuple):
    """How the queries' per-channel statistics compare with the reference's.

    Attributes:
        std_ratio: pooled standard deviation of the queries over the reference's,
            ``sqrt(sum_c var_q[c] / sum_c var_r[c])``.
        offset: RMS over channels of ``mean_q[c] - mean_r[c]``, in pooled reference standard
            deviations ``sqrt(mean_c var_r[c])``.
    """

    std_ratio: float
    offset: float

    @property
    def differs(self) -> bool:
        """Whether the two are on different scales (an affine map apart)."""
        ratio_ok = 1 / STD_RATIO_LIMIT <= self.std_ratio <= STD_RATIO_LIMIT
        return not ratio_ok or self.offset > OFFSET_LIMIT


def scale_mismatch(query: ChannelStatistics, reference: ChannelStatistics) -> ScaleMismatch | None:
    """Compare per-channel statistics (C,) of queries and reference; None when the reference
    has no spread to compare with (constant rows)."""
    var_q = query.std.double() ** 2
    var_r = reference.std.double() ** 2
    total = float(var_r.sum())
    if not total > 0 or not math.isfinite(total):
        return None
    ratio = math.sqrt(float(var_q.sum()) / total)
    shift = float(((query.mean.double() - reference.mean.double()) ** 2).mean())
    offset = math.sqrt(shift / float(var_r.mean()))
    if not (math.isfinite(ratio) and math.isfinite(offset)):
        return None
    return ScaleMismatch(ratio, offset)


def channels_of(shape: tuple[int, ...]) -> int:
    """Channels of latents of per-sample ``shape``: (C, ...) -> C; flat (D,) -> 1 (pooled)."""
    return int(shape[0]) if len(shape) > 1 else 1


class ScaleCheck:
    """The comparison for one build of the reference: its statistics, and the queries' sums
    until a decision.

    Args:
        rows: (M, D) a spread sample of the indexed rows (raw latents, channel-major).
        channels: the latents' channel count C (D a multiple of it).
        min_rows: query latents to accumulate before deciding.
    """

    def __init__(self, rows: Tensor, channels: int, min_rows: int = MIN_QUERY_ROWS) -> None:
        self.channels = channels
        self.dim = int(rows.shape[1])
        self.reference = channel_statistics(rows.detach(), channels, eps=0.0)
        self.min_rows = min_rows
        self.rows = 0
        self.count = 0
        # Sums of (z - reference mean) and its square per channel, float64 (no cancellation).
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sum_sq = torch.zeros(channels, dtype=torch.float64)
        self.decided = False

    def add(self, z: Tensor) -> ScaleMismatch | None:
        """Accumulate the query latents ``z`` (B, ...); the comparison once, when ``min_rows``
        latents have been seen (None before, and after: the check is then done)."""
        if self.decided:
            return None
        flat = z.detach().reshape(z.shape[0], -1)
        if flat.shape[1] != self.dim or channels_of(tuple(z.shape[1:])) != self.channels:
            return None  # not comparable; the search reports a shape mismatch itself
        x = flat.reshape(flat.shape[0], self.channels, -1).to(torch.float64)
        x = x - self.reference.mean.to(x.device)[None, :, None]
        if not bool(torch.isfinite(x).all()):
            return None  # non-finite latents are refused elsewhere; learn nothing from them
        self.sum += x.sum((0, 2)).cpu()
        self.sum_sq += (x * x).sum((0, 2)).cpu()
        self.count += x.shape[0] * x.shape[2]
        self.rows += x.shape[0]
        if self.rows < self.min_rows:
            return None
        self.decided = True
        shifted = self.sum / self.count
        var = (self.sum_sq / self.count - shifted**2).clamp_min(0.0)
        mean = shifted + self.reference.mean.cpu()
        return scale_mismatch(ChannelStatistics(mean, var.sqrt()), self._reference_cpu())

    def _reference_cpu(self) -> ChannelStatistics:
        return ChannelStatistics(self.reference.mean.cpu(), self.reference.std.cpu())
