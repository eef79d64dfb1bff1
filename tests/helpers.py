"""Small deterministic stand-ins shared by the tests: a VAE, a feature network, a model and a
dataset in the Hugging Face Trainer's form; a runner of gloo process groups."""

from __future__ import annotations

import os
import socket

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn


def encode(x: torch.Tensor) -> torch.Tensor:
    """A parameter-free 'encoder': 2x average pooling, (B, C, H, W) -> (B, C, H/2, W/2)."""
    return F.avg_pool2d(x, 2)


def decode(z: torch.Tensor) -> torch.Tensor:
    """The matching 'decoder': nearest 2x upsampling."""
    return F.interpolate(z, scale_factor=2, mode="nearest")


class RandomFeatures(nn.Module):
    """A fixed random projection of flattened images followed by tanh: (B, C, H, W) -> (B, d)."""

    def __init__(self, in_dim: int, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(in_dim, num_features, generator=g) / in_dim**0.5)
        self.num_features = num_features
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(x.reshape(x.shape[0], -1).double() @ self.weight.double()).float()


def smooth_images(n: int, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Random smooth images in [-1, 1], shape (n, c, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, c, size // 2, size // 2, generator=g) * 2 - 1
    x = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Reference FID between two (N, d) feature sets with numpy/scipy only."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def numpy_slerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Reference slerp of two flat vectors, written independently of the library."""
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    theta = np.arccos(np.clip(cos, -1, 1))
    if np.sin(theta) < 1e-6:
        return (1 - alpha) * a + alpha * b
    return (np.sin((1 - alpha) * theta) * a + np.sin(alpha * theta) * b) / np.sin(theta)


class VAEModel(nn.Module):
    """A Trainer-style model around a small TinyVAE: ``forward(pixel_values)`` returns the loss
    and the latents (what the callbacks collect)."""

    def __init__(self) -> None:
        super().__init__()
        from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

        torch.manual_seed(0)
        self.vae = TinyVAE(TinyVAEConfig(base_channels=8))

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.vae.loss(pixel_values)
        return {"loss": out["loss"], "latents": out["latents"]}


class PixelValues(torch.utils.data.Dataset):
    """Images (N, C, H, W) served as ``{"pixel_values": image}`` items."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i]}


def free_port() -> int:
    """A TCP port on localhost that nothing listens on (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, path: str, fn, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # several ranks share the cores
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world, *args), f"{path}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def run_ranks(fn, world: int, tmp_path, *args) -> list:
    """``fn(rank, world, *args)`` in ``world`` spawned CPU processes joined by a gloo process
    group; returns each rank's result (``fn`` must be importable: a module-level function)."""
    import torch.multiprocessing as mp

    path = str(tmp_path / "rank")
    mp.start_processes(
        _gloo_rank, args=(world, free_port(), path, fn, args), nprocs=world, start_method="spawn"
    )
    return [torch.load(f"{path}.{rank}", weights_only=False) for rank in range(world)]


def fit_quietly(trainer, module, train, val=None, **kwargs) -> None:
    """``trainer.fit`` without Lightning's warnings about loader workers and the log interval,
    which tiny CPU runs always trigger."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
        trainer.fit(module, train, val, **kwargs)
