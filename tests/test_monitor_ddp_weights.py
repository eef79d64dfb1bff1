"""Two CPU processes (gloo) evaluating training and averaged weights in one evaluation give the
numbers of one process: the weights' evaluations are collectives in the same order on every rank."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

SIZE = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_run(rank, world), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_with_extra_weights(tmp_path):
    single = _run(0, 1)
    path = str(tmp_path / "out")
    mp.start_processes(_worker, args=(2, _free_port(), path), nprocs=2, start_method="spawn")
    for rank in range(2):
        out = torch.load(f"{path}.{rank}")
        assert out["bank_size"] == single["bank_size"] == 48
        for key in ("ifid", "rfid", "ifid_ema", "rfid_ema"):
            assert out[key] == pytest.approx(single[key], rel=1e-6)
    assert single["ifid_ema"] != pytest.approx(single["ifid"], rel=1e-3)
