"""One probe of one VAE in a study: train it (seed ``seed + index``), then its gFID against the
training reference and against the held-out images with their sampling standard errors, gFID(t)
for each t, and IRS; each a cached stage, so an interrupted run resumes where it stopped.

Common random numbers: every generator here is keyed by the probe seed alone (``seed + index``),
never by the VAE, so probe ``index`` of every VAE with the same latent shape and probe recipe gets
the same initialisation, batch order of indices, training noise and times, and sampling noise
(sample j starts from the same noise draw). Two VAEs' gFIDs at one probe seed are then paired
sample by sample (:func:`~ifid_callback.probes.gfid_error.paired_gfid_difference`); each sample's
influence on gFID is kept in ``gfid_influence[_s<index>].npy`` for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .fid import fid_from_features
from .gfid import generated_features, regenerated_features
from .gfid_error import gfid_influence
from .irs import image_retrieval_score
from .stages import Stages, finish_array, load_array, open_memmap
from .study_config import StudyConfig, feature_key
from .train import train_probe
from .trained_probe import TrainedProbe

__all__ = ["influence_file", "run_probe_seed", "sampling_seed"]


def sampling_seed(study_seed: int, index: int) -> int:
    """The seed of probe ``index``'s gFID sampling noise: a function of the probe seed only."""
    return study_seed + 3 + 1000 * index


def influence_file(vae_dir: Path, index: int) -> Path:
    """Where probe ``index`` of a VAE keeps each generated sample's influence on its gFID."""
    return Path(vae_dir) / ("gfid_influence.npy" if index == 0 else f"gfid_influence_s{index}.npy")


def run_probe_seed(
    config: StudyConfig,
    index: int,
    vae_dir: Path,
    real_dir: Path,
    stages: Stages,
    data_key: dict[str, Any],
    decode: Callable[[Tensor], Tensor],
    feature: nn.Module,
    progress: bool,
) -> dict[str, Any]:
    """Probe number ``index`` of one VAE: train it, then its gFID (against the training
    reference and the held-out images), gFID(t) and IRS."""
    suffix = "" if index == 0 else f"@s{index}"
    file_suffix = "" if index == 0 else f"_s{index}"
    probe_dir = vae_dir / f"probe{file_suffix}"
    samples_file = vae_dir / f"features_samples{file_suffix}.npy"
    probe_cfg = config.probe_config(index, vae_dir.name)  # vae_dir is <out>/vaes/<name>
    probe_key = {
        **data_key,
        "probe": {
            k: v
            for k, v in probe_cfg.to_dict().items()
            if k not in ("checkpoint_every", "keep_checkpoints", "log_every")
        },
    }

    def probe_stage() -> dict[str, Any]:
        z_train = torch.from_numpy(load_array(vae_dir / "latents_train.npy"))
        started = time.time()
        probe = train_probe(
            z_train, None, probe_cfg, out_dir=probe_dir, resume=True, progress=progress
        )
        tail = [v for _, v in probe.loss_history[-5:]]
        return {
            "steps": probe.step,
            "final_loss": float(np.mean(tail)) if tail else None,
            "train_seconds": time.time() - started,
            "params": sum(p.numel() for p in probe.model.parameters()),
            "time_shift": probe.time_shift,
        }

    probe_res = stages.run(f"probe{suffix}", probe_key, probe_stage)
    probe: TrainedProbe | None = None

    def get_probe() -> TrainedProbe:
        nonlocal probe
        if probe is None:
            probe = TrainedProbe.load(probe_dir / "probe.pt", map_location=config.device)
        return probe

    sample_key = {
        **probe_key,
        **feature_key(config),
        "sampler": config.sampler,
        "sampling_steps": config.sampling_steps,
    }
    # Keyed by the probe seed only (never the VAE): common random numbers across VAEs. Sampling
    # noise differs between probe seeds, so the seed spread includes it.
    sample_seed = sampling_seed(config.seed, index)

    def gfid_stage() -> dict[str, Any]:
        tmp = samples_file.with_name(samples_file.stem + ".tmp.npy")
        ref = load_array(real_dir / "reference_features.npy")
        arr = open_memmap(tmp, (config.num_samples, ref.shape[1]))
        _, images = generated_features(
            get_probe(),
            decode,
            feature,
            config.num_samples,
            batch_size=config.sample_batch_size,
            sampler=config.sampler,
            steps=config.sampling_steps,
            seed=sample_seed,
            device=config.device,
            out=arr,
            keep_images=64,
            progress=progress,
        )
        finish_array(tmp, arr, samples_file)
        if images is not None:
            from .sampling import save_image_grid

            save_image_grid(images, vae_dir / f"samples{file_suffix}.png", nrow=8)
        feats = load_array(samples_file)
        held_out = load_array(real_dir / "eval_features.npy")
        return {
            "gfid": fid_from_features(feats, ref),
            # Against held-out images: a probe that memorised the training images scores no
            # better here than one that generalises.
            "gfid_heldout": fid_from_features(feats, held_out),
            "num_samples": config.num_samples,
        }

    gfid_key = {
        **sample_key,
        "num_samples": config.num_samples,
        "num_reference": config.num_reference,
        "heldout": [config.eval_data, config.num_eval],
    }
    gf = stages.run(f"gfid{suffix}", gfid_key, gfid_stage)

    def gfid_se_stage() -> dict[str, Any]:
        # The influence-function standard errors of gFID (reference held fixed; the reference's
        # own term alongside), from the cached sample features.
        feats = load_array(samples_file)
        found = gfid_influence(feats, load_array(real_dir / "reference_features.npy"))
        np.save(influence_file(vae_dir, index), found.generated.numpy())
        held = gfid_influence(feats, load_array(real_dir / "eval_features.npy"))
        return {
            "gfid_se": found.std_error,
            "gfid_se_reference": found.std_error_reference,
            "gfid_heldout_se": held.std_error,
        }

    se = stages.run(f"gfid_se{suffix}", {**gfid_key, "se": "influence"}, gfid_se_stage)

    gfid_t: dict[str, float] = {}
    gfid_t_se: dict[str, float] = {}
    for t in config.t_grid:
        label = f"{float(t):g}"

        def gfid_t_stage(t: float = float(t), label: str = label) -> dict[str, Any]:
            z_eval = load_array(vae_dir / "latents_eval.npy")
            feats = regenerated_features(
                get_probe(),
                z_eval,
                t,
                decode,
                feature,
                batch_size=config.sample_batch_size,
                sampler=config.sampler,
                steps=config.sampling_steps,
                seed=config.seed + 4 + 1000 * index,
                device=config.device,
                progress=progress,
            )
            np.save(vae_dir / f"features_regen_t{label}{file_suffix}.npy", feats)
            real = load_array(real_dir / "eval_features.npy")
            return {"gfid_t": fid_from_features(feats, real), "t": t}

        gfid_t[label] = stages.run(
            f"gfid_t={label}{suffix}", {**sample_key, "t": float(t)}, gfid_t_stage
        )["gfid_t"]

        def gfid_t_se_stage(label: str = label) -> dict[str, Any]:
            # As gFID's: over the regenerated samples, the held-out reference held fixed.
            feats = load_array(vae_dir / f"features_regen_t{label}{file_suffix}.npy")
            real = load_array(real_dir / "eval_features.npy")
            return {"gfid_t_se": gfid_influence(feats, real).std_error}

        gfid_t_se[label] = stages.run(
            f"gfid_t_se={label}{suffix}",
            {**sample_key, "t": float(t), "se": "influence"},
            gfid_t_se_stage,
        )["gfid_t_se"]

    def irs_stage() -> dict[str, Any]:
        feats = load_array(samples_file)
        ref = load_array(real_dir / "reference_features.npy")
        return image_retrieval_score(
            torch.from_numpy(np.ascontiguousarray(feats)),
            torch.from_numpy(np.ascontiguousarray(ref)),
            distance=config.irs_distance,
        ).to_dict()

    irs = stages.run(
        f"irs{suffix}",
        {
            **sample_key,
            "num_samples": config.num_samples,
            "num_reference": config.num_reference,
            "irs_distance": config.irs_distance,
        },
        irs_stage,
    )
    return {
        "seed": probe_cfg.seed,
        "sample_key": sample_key,
        "time_shift": probe_res.get("time_shift"),
        "probe_loss": probe_res["final_loss"],
        "probe_steps": probe_res["steps"],
        "gfid": gf["gfid"],
        "gfid_heldout": gf["gfid_heldout"],
        **se,
        "gfid_t": gfid_t,
        "gfid_t_se": gfid_t_se,
        "irs": irs,
    }
