"""The real-statistics cache under torch.distributed: rank 0 alone writes, every rank then gets
the numbers of one process, and a new monitor on the same images skips the real pass."""

from __future__ import annotations

import pytest
import torch

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, run_ranks, smooth_images
from tests.test_stats_cache import counted, entries

SIZE = 16


def _two_monitors(rank: int, world: int, cache: str) -> list[tuple[dict, int, int]]:
    """Two monitors one after the other (a run, then a new run) on the same evaluation images,
    each evaluated once: (result, images this rank featurised, cache entries after)."""
    from pathlib import Path

    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    out = []
    for _ in range(2):
        feature = counted(RandomFeatures(3 * SIZE * SIZE))
        monitor = IFIDMonitor(
            vae,
            eval_images=smooth_images(16, 3, SIZE, seed=5),
            feature=feature,
            bank_capacity=32,
            real_stats_cache=cache,
        )
        with torch.no_grad():
            for x in smooth_images(16, 3, SIZE, seed=3)[rank::world].split(8):
                monitor.observe(latents=vae.encode(x).mean)
        result = {k: float(v) for k, v in monitor.evaluate(step=1).items()}
        if world > 1:
            torch.distributed.barrier()  # rank 0's write is done before anyone counts entries
        out.append((result, feature.seen[0], len(entries(Path(cache)))))
    return out


def test_two_ranks_share_one_entry_and_get_the_single_process_numbers(tmp_path):
    single = _two_monitors(0, 1, str(tmp_path / "single"))
    assert [(seen, n) for _, seen, n in single] == [(48, 1), (32, 1)]
    ranks = run_ranks(_two_monitors, 2, tmp_path, str(tmp_path / "ddp"))
    for rank_out in ranks:
        # Each rank featurises its 8 real images, 8 interpolants and 8 reconstructions, then,
        # with the cached statistics, only its decodes.
        assert [(seen, n) for _, seen, n in rank_out] == [(24, 1), (16, 1)]
        for (result, _, _), (expected, _, _) in zip(rank_out, single, strict=True):
            for key in ("ifid", "rfid", "ifid_std", "rfid_std"):
                assert result[key] == pytest.approx(expected[key], rel=1e-6), key
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == [
        p.name for p in (tmp_path / "ddp").glob("*.npz")
    ]  # no temporary file left behind
