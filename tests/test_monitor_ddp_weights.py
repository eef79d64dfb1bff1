"""Two CPU processes (gloo) evaluating training and averaged weights in one evaluation give the
numbers of one process: the weights' evaluations are collectives in the same order on every rank."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, run_ranks, smooth_images

SIZE = 16


def _run(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    ema = AveragedModel(vae, multi_avg_fn=get_ema_multi_avg_fn(0.5))
    train = smooth_images(48, 3, SIZE, seed=3)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for x in train.split(8)[:4]:  # the same weights on every rank
        opt.zero_grad()
        vae.loss(x)["loss"].backward()
        opt.step()
        ema.update_parameters(vae)
    monitor = IFIDMonitor(
        vae,
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(3 * SIZE * SIZE),
        eval_batch_size=4,
        extra_vaes={"ema": ema},
    )
    with torch.no_grad():
        for x in train[rank::world].split(8):  # each rank banks its own share
            monitor.observe(latents=vae.encode(x).mean)
    result = monitor.evaluate(step=1)
    return {k: float(v) for k, v in result.items()}


def test_two_processes_match_one_with_extra_weights(tmp_path):
    single = _run(0, 1)
    for out in run_ranks(_run, 2, tmp_path):
        assert out["bank_size"] == single["bank_size"] == 48
        for key in ("ifid", "rfid", "ifid_ema", "rfid_ema"):
            assert out[key] == pytest.approx(single[key], rel=1e-6)
    assert single["ifid_ema"] != pytest.approx(single["ifid"], rel=1e-3)
