"""A rank that holds no query images (more ranks than evaluation images, or a shard left empty)
takes part in the gathers with correctly shaped empty rows: every rank gets the numbers of one
process, where the job used to abort on a collective mismatch."""

from __future__ import annotations

import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, run_ranks, smooth_images

SIZE = 16


def _vae() -> TinyVAE:
    torch.manual_seed(0)
    return TinyVAE(TinyVAEConfig(base_channels=8)).eval()


def _metric_on_rank_zero_only(rank: int, world: int, with_bank: bool) -> dict:
    vae = _vae()
    bank = None
    if with_bank:
        bank = LatentBank(capacity=64)
        with torch.no_grad():
            train = smooth_images(32, 3, SIZE, seed=3)
            bank.add(vae.encode(train[rank::world]).mean)  # each rank banks its share
    metric = InterpolatedFID(vae=vae, feature=RandomFeatures(3 * SIZE * SIZE), bank=bank, k=2)
    if with_bank:  # the gather of the banks is a collective: a rank without images joins here
        metric.refresh_index()
    if rank == 0:  # explicit positions: the same random picks as in one process
        metric.update(smooth_images(12, 3, SIZE, seed=5), positions=torch.arange(12))
    return {k: float(v) for k, v in metric.compute().items()}


def _monitor_with_fewer_images_than_ranks(rank: int, world: int) -> list[dict]:
    vae = _vae()
    monitor = IFIDMonitor(
        vae,
        eval_images=smooth_images(3, 3, SIZE, seed=5),
        feature=RandomFeatures(3 * SIZE * SIZE),
        eval_batch_size=4,
    )
    with torch.no_grad():
        for x in smooth_images(24, 3, SIZE, seed=3)[rank::world].split(8):
            monitor.observe(latents=vae.encode(x).mean)
    # Two evaluations: the second reuses the cached real statistics and per-image rows.
    return [{k: float(v) for k, v in monitor.evaluate(step=s).items()} for s in (1, 2)]


@pytest.mark.parametrize("with_bank", [False, True], ids=["queries", "bank"])
def test_a_rank_without_images_gets_the_single_process_numbers(tmp_path, with_bank):
    single = _metric_on_rank_zero_only(0, 1, with_bank)
    assert {"ifid_std", "rfid_std", "psnr"} <= set(single)
    for out in run_ranks(_metric_on_rank_zero_only, 2, tmp_path, with_bank):
        assert out.keys() == single.keys()
        for key, value in single.items():
            assert out[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.filterwarnings("ignore:3 evaluation images")
def test_monitor_with_fewer_evaluation_images_than_ranks(tmp_path):
    single = _monitor_with_fewer_images_than_ranks(0, 1)
    for out in run_ranks(_monitor_with_fewer_images_than_ranks, 4, tmp_path):
        for evaluation, expected in zip(out, single, strict=True):
            assert evaluation["num_eval_images"] == 3 and evaluation["bank_size"] == 24
            for key in ("ifid", "rfid", "ifid_std", "rfid_std", "psnr"):
                assert evaluation[key] == pytest.approx(expected[key], rel=1e-5), key
