"""The natural family's companion predictors of gFID, per VAE (issue 18, item 2).

* ``latent_hf_energy`` and ``equivariance_error``: the opt-in extras of
  :class:`~ifid_callback.InterpolatedFID` (``latent_spectrum=True``, ``equivariance=True``), run
  over the study's held-out images with the study's iFID settings and a bank of the study's own
  training latents, so both come from the encode that iFID uses. The metric's own iFID and rFID
  are kept next to them (``metric_ifid``, ``metric_rfid``): a check that the metric and the
  study's iFID stage agree.
* ``probe_loss_area``: :func:`loss_curve_area` of each probe's logged training loss
  (:attr:`~ifid_callback.probes.trained_probe.TrainedProbe.loss_history`), one value per probe
  seed, and their mean per VAE.

The metric pass is a cached stage of the VAE (``<out>/vaes/<name>/natural.json``); the loss
areas are read from the probes' ``probe.pt`` files each time (they cost nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .stages import Stages, load_array
from .study_config import StudyConfig, feature_key

__all__ = ["companion_predictors", "loss_curve_area", "probe_file"]


def loss_curve_area(history: Sequence[tuple[int, float]]) -> float:
    """The mean training loss over a probe's logged curve: the trapezoidal area under the
    ``(step, mean loss)`` points divided by the step span (last step - first step)::

        sum_i (s_{i+1} - s_i) (l_i + l_{i+1}) / 2  /  (s_last - s_first)

    One point: its loss. Steps must increase strictly. A non-finite loss gives NaN.
    """
    if len(history) == 0:
        raise ValueError("the loss curve is empty: the probe logged no loss (train it first)")
    steps = np.array([float(s) for s, _ in history])
    losses = np.array([float(v) for _, v in history])
    if len(history) == 1:
        return float(losses[0])
    if (np.diff(steps) <= 0).any():
        raise ValueError(
            f"loss-curve steps must increase strictly, got {steps.astype(int).tolist()}"
        )
    area = float((np.diff(steps) * (losses[1:] + losses[:-1]) / 2.0).sum())
    return area / float(steps[-1] - steps[0])


def probe_file(vae_dir: Path, index: int) -> Path:
    """The saved probe of seed index ``index`` of a study's VAE (as ``probe_seed`` names it)."""
    return vae_dir / ("probe" if index == 0 else f"probe_s{index}") / "probe.pt"


def _loss_areas(vae_dir: Path, seeds: int) -> list[float]:
    from .trained_probe import TrainedProbe

    areas = []
    for index in range(seeds):
        path = probe_file(vae_dir, index)
        if not path.is_file():
            raise FileNotFoundError(
                f"no saved probe at {path}: run the study first (run_natural_family does)"
            )
        areas.append(loss_curve_area(TrainedProbe.load(path).loss_history))
    return areas


def _metric_pass(
    config: StudyConfig, spec: str, vae_dir: Path, feature: nn.Module, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from ..bank import LatentBank
    from ..metric import InterpolatedFID
    from .study_data import study_dataset, study_loader
    from .study_vae import load_study_vae

    device = torch.device(config.device)
    vae = load_study_vae(spec, device)
    z_train = torch.from_numpy(np.ascontiguousarray(load_array(vae_dir / "latents_train.npy")))
    bank = LatentBank(capacity=len(z_train), device=device)
    bank.add(z_train.to(device))
    metric = InterpolatedFID(
        vae=vae,
        feature=feature,
        bank=bank,
        interpolation=config.interpolation,
        alpha=config.alpha,
        k=config.k,
        distance=config.distance,
        seed=config.seed,
        latent_spectrum=True,
        equivariance=True,
    ).to(device)
    eval_ds = study_dataset(
        config.eval_data, "val", config.image_size, config.num_eval, config.seed
    )
    for images in tqdm(
        study_loader(eval_ds, config), desc=f"{vae_dir.name}:companions", disable=not progress
    ):
        metric.update(images.to(device))
    scores = metric.compute()
    return {
        "latent_hf_energy": float(scores["latent_hf_energy"]),
        "equivariance_error": float(scores["equivariance_error"]),
        "metric_ifid": float(scores["ifid"]),
        "metric_rfid": float(scores["rfid"]),
        "metric_ifid_std": float(scores.get("ifid_std", math.nan)),
        "metric_rfid_std": float(scores.get("rfid_std", math.nan)),
    }


def companion_predictors(
    config: StudyConfig,
    spec: str,
    name: str,
    feature: nn.Module,
    seeds: int,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """The companions of VAE ``name`` of a finished study (its latents and probes on disk).

    Returns ``{"latent_hf_energy", "equivariance_error", "metric_ifid", "metric_rfid",
    "metric_ifid_std", "metric_rfid_std", "probe_loss_area", "probe_loss_area_seeds"}``.
    """
    out = Path(config.out_dir)
    vae_dir = out / "vaes" / name
    stages = Stages(vae_dir / "natural.json", out / "events.jsonl")
    path = Path(spec)
    key = {
        "spec": spec,
        "mtime": round(path.stat().st_mtime, 3) if path.exists() else None,
        **feature_key(config),
        "eval": [config.eval_data, config.num_eval],
        "interpolation": config.interpolation,
        "alpha": config.alpha,
        "k": config.k,
        "distance": config.distance,
        "seed": config.seed,
        "extras": ["latent_spectrum", "equivariance"],
    }
    scores = stages.run(
        "companions", key, lambda: _metric_pass(config, spec, vae_dir, feature, progress)
    )
    areas = _loss_areas(vae_dir, seeds)
    return {**scores, "probe_loss_area": float(np.mean(areas)), "probe_loss_area_seeds": areas}
