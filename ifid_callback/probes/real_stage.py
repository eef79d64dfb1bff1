"""The study's shared real-image stage: features of the held-out and reference images, and the FID
noise floors and IRS of real images (what a perfect generator would score)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..stats_cache import resolve_stats_cache
from .feature_cache import cached_feature_rows, write_reference_npz
from .fid import fid_from_features
from .gfid import extract_features
from .irs import image_retrieval_score
from .stages import Stages, finish_array, load_array, open_memmap
from .study_config import StudyConfig, feature_key
from .study_data import study_dataset, study_loader

__all__ = ["real_stage"]


def real_stage(
    config: StudyConfig,
    feature: nn.Module,
    out: Path,
    events: Path,
    progress: bool,
    stats_cache: Any = None,
) -> dict[str, Any]:
    """Features of the held-out and reference real images (from ``stats_cache`` when it holds
    them: :func:`~ifid_callback.stats_cache.resolve_stats_cache`), FID noise floors, and the
    gFID reference's ``mu``/``sigma`` in ``real/reference_stats.npz`` (ADM's layout)."""
    from tqdm.auto import tqdm

    cache = resolve_stats_cache(stats_cache)
    real_dir = out / "real"
    stages = Stages(real_dir / "stages.json", events)
    eval_ds = study_dataset(
        config.eval_data, "val", config.image_size, config.num_eval, config.seed
    )
    ref_ds = study_dataset(
        config.train_data, "train", config.image_size, config.num_reference, config.seed + 1
    )

    def featurise(ds: Dataset, name: str) -> Callable[[], dict[str, Any]]:
        def compute() -> dict[str, Any]:
            tmp = real_dir / f"{name}.tmp.npy"
            dim = _feature_dim(feature, ds, config)
            arr = open_memmap(tmp, (len(ds), dim))  # type: ignore[arg-type]
            batches = tqdm(study_loader(ds, config), desc=name, disable=not progress, leave=False)
            cached_feature_rows(
                cache,
                lambda: study_loader(ds, config),
                feature,
                arr,
                lambda: extract_features(batches, feature, device=config.device, out=arr),
            )
            finish_array(tmp, arr, real_dir / f"{name}.npy")
            return {"count": len(ds), "dim": dim}  # type: ignore[arg-type]

        return compute

    base_key = {**feature_key(config), "seed": config.seed}
    stages.run(
        "eval_features",
        {**base_key, "data": config.eval_data, "n": config.num_eval},
        featurise(eval_ds, "eval_features"),
    )
    stages.run(
        "reference_features",
        {**base_key, "data": config.train_data, "n": config.num_reference},
        featurise(ref_ds, "reference_features"),
    )

    def floors() -> dict[str, Any]:
        ev = load_array(real_dir / "eval_features.npy")
        ref = load_array(real_dir / "reference_features.npy")
        write_reference_npz(ref, real_dir / "reference_stats.npz")
        n_s = min(len(ev), config.num_samples)
        result: dict[str, Any] = {
            # What a model that generalises perfectly would score: held-out real images, as
            # many as the gFID samples, against the same reference.
            "gfid_floor": fid_from_features(ev[:n_s], ref),
            "gfid_floor_n": n_s,
        }
        # Interleaved halves: the subsets are in dataset order, which groups images by source.
        half = len(ref) // 2
        result["reference_split_half_fid"] = fid_from_features(
            ref[0 : 2 * half : 2], ref[1 : 2 * half : 2]
        )
        result["reference_split_half_n"] = half
        if len(ev) >= 4:
            h = len(ev) // 2
            result["eval_split_half_fid"] = fid_from_features(ev[0 : 2 * h : 2], ev[1 : 2 * h : 2])
            result["eval_split_half_n"] = h
        irs_real = image_retrieval_score(
            torch.from_numpy(np.ascontiguousarray(ev[:n_s])),
            torch.from_numpy(np.ascontiguousarray(ref)),
            distance=config.irs_distance,
        )
        result["irs_real"] = irs_real.to_dict()
        return result

    return stages.run(
        "floors",
        {
            **base_key,
            "n_eval": config.num_eval,
            "n_ref": config.num_reference,
            "num_samples": config.num_samples,
            "irs_distance": config.irs_distance,
            "halves": "interleaved",
        },
        floors,
    )


def _feature_dim(feature: nn.Module, ds: Dataset, config: StudyConfig) -> int:
    dim = getattr(feature, "num_features", None)
    if isinstance(dim, int):
        return dim
    with torch.no_grad():
        return int(feature(ds[0][None].to(config.device)).shape[1])
