"""The study's iFID ablations: iFID recomputed under each extra setting (interpolation, alpha,
k), one neighbour search per distance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .fid import fid_from_features
from .stages import load_array
from .study_config import StudyConfig

__all__ = ["ablation_label", "ifid_ablation"]


def ablation_label(setting: dict[str, Any]) -> str:
    """``"slerp a=0.5 k=1"``: the name of an iFID setting in reports."""
    return f"{setting['interpolation']} a={float(setting['alpha']):g} k={int(setting['k'])}"


def ifid_ablation(
    config: StudyConfig,
    vae_dir: Path,
    real_dir: Path,
    eval_ds: Dataset,
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    device: torch.device,
) -> dict[str, float]:
    """iFID under each setting of ``config.ifid_ablation`` (one neighbour search per distance)."""
    from ..functional.interpolation import interpolate
    from ..index import NeighborIndex

    z_train = torch.from_numpy(load_array(vae_dir / "latents_train.npy"))
    z_eval = torch.from_numpy(np.ascontiguousarray(load_array(vae_dir / "latents_eval.npy")))
    real = load_array(real_dir / "eval_features.npy")
    max_k = max(int(s["k"]) for s in config.ifid_ablation)
    neighbours: dict[str, Tensor] = {}
    out: dict[str, float] = {}
    for setting in config.ifid_ablation:
        method, alpha, k = setting["interpolation"], float(setting["alpha"]), int(setting["k"])
        distance = config.distance or ("sqeuclidean" if method == "linear" else "cosine")
        if distance not in neighbours:
            index = NeighborIndex(index="exact", distance=distance, device=device)
            index.build(z_train.flatten(1))
            neighbours[distance] = index.search(z_eval.flatten(1).to(device), k=max_k)[1].cpu()
        gen = torch.Generator().manual_seed(config.seed)
        pick = torch.randint(0, k, (len(z_eval),), generator=gen)
        nn_idx = neighbours[distance][torch.arange(len(z_eval)), pick]
        mask_gen = torch.Generator().manual_seed(config.seed + 5)
        feats = []
        for start in range(0, len(z_eval), config.batch_size):
            z = z_eval[start : start + config.batch_size]
            z_nn = z_train[nn_idx[start : start + config.batch_size]]
            z_hat = interpolate(z, z_nn, method, alpha, generator=mask_gen)
            with torch.no_grad():
                feats.append(feature(decode(z_hat.to(device))).float().cpu().numpy())
        out[ablation_label(setting)] = fid_from_features(np.concatenate(feats), real)
    return out
