"""One VAE of a study: load it, encode the images to memory-mapped latents, then rFID, iFID and
PSNR, the iFID ablations, its probes (one per seed) and the split-half FIDs; each a cached stage.

The stages of probe seed ``i >= 1`` go to ``stages_s<i>.json`` (seed 0's, and the VAE's own, to
``stages.json``), so that a sharded study can run a VAE's probe seeds side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .ablation import ifid_ablation
from .fid import fid_from_features
from .gfid_error import seed_fields, seed_summary
from .probe_seed import run_probe_seed
from .stages import Stages, finish_array, load_array, open_memmap
from .study_config import StudyConfig, feature_key
from .study_data import study_dataset, study_loader

__all__ = ["load_study_vae", "run_vae"]


def load_study_vae(spec: str, device: torch.device | str = "cpu") -> Any:
    """Load a VAE: a ``.ckpt``/``.pt`` Lightning-style TinyVAE checkpoint, else
    :func:`ifid_callback.loading.load_vae` (diffusers directory, hub id, factory path)."""
    path = Path(spec)
    if path.is_file() and path.suffix in (".ckpt", ".pt", ".pth"):
        from .zoo import load_vae_checkpoint

        return load_vae_checkpoint(path, device)
    from ..loading import load_vae

    return load_vae(spec, device)


def _mtime(spec: str) -> float | None:
    path = Path(spec)
    return round(path.stat().st_mtime, 3) if path.exists() else None


def run_vae(
    config: StudyConfig,
    spec: str,
    name: str,
    feature: nn.Module,
    out: Path,
    events: Path,
    progress: bool,
    probes: Sequence[int] | None = None,
) -> dict[str, Any] | None:
    """The study's row for one VAE (its metrics, probes' gFIDs, IRS, ablations, split halves).

    ``probes``: run only these probe seeds (indices; ``[]``: none, only the VAE's own stages)
    and return None: one job of a sharded study (:mod:`~ifid_callback.probes.shard`).
    """
    from tqdm.auto import tqdm

    from ..functional.interpolation import interpolate
    from ..index import NeighborIndex
    from ..vae import VAEAdapter

    vae_dir = out / "vaes" / name
    stages = Stages(vae_dir / "stages.json", events)
    real_dir = out / "real"
    vae = load_study_vae(spec, config.device)
    adapter = VAEAdapter(vae=vae)
    device = torch.device(config.device)

    def decode(z: Tensor) -> Tensor:
        with torch.no_grad():
            return adapter.decode(z.to(device)).float().clamp(-1.0, 1.0)

    vae_key = {"spec": spec, "mtime": _mtime(spec)}
    data_key = {
        **vae_key,
        "seed": config.seed,
        "image_size": config.image_size,
        "train": [config.train_data, config.max_train],
        "eval": [config.eval_data, config.num_eval],
    }
    train_ds = study_dataset(
        config.train_data, "train", config.image_size, config.max_train, config.seed + 2
    )
    eval_ds = study_dataset(
        config.eval_data, "val", config.image_size, config.num_eval, config.seed
    )

    def encode_all(ds: Dataset, stem: str) -> dict[str, Any]:
        arr, filled = None, 0
        tmp = vae_dir / f"{stem}.tmp.npy"
        for images in tqdm(
            study_loader(ds, config), desc=f"{name}:{stem}", disable=not progress, leave=False
        ):
            with torch.no_grad():
                z = adapter.encode(images.to(device)).float()
            if not torch.isfinite(z).all():
                raise ValueError(f"VAE {name} produced NaN/Inf latents")
            if arr is None:
                arr = open_memmap(tmp, (len(ds), *z.shape[1:]))  # type: ignore[arg-type]
            arr[filled : filled + len(z)] = z.cpu().numpy()
            filled += len(z)
        if arr is None:
            raise ValueError(f"no images in {stem}")
        shape = list(arr.shape)
        finish_array(tmp, arr, vae_dir / f"{stem}.npy")
        return {"shape": shape}

    def latents() -> dict[str, Any]:
        return {
            "train": encode_all(train_ds, "latents_train")["shape"],
            "eval": encode_all(eval_ds, "latents_eval")["shape"],
        }

    lat = stages.run("latents", data_key, latents)

    # --- rFID, iFID, PSNR
    ifid_key = {
        **data_key,
        **feature_key(config),
        "interpolation": config.interpolation,
        "alpha": config.alpha,
        "k": config.k,
        "distance": config.distance,
    }

    def reconstruction() -> dict[str, Any]:
        z_train = torch.from_numpy(load_array(vae_dir / "latents_train.npy"))
        z_eval = torch.from_numpy(load_array(vae_dir / "latents_eval.npy"))
        distance = config.distance or (
            "sqeuclidean" if config.interpolation == "linear" else "cosine"
        )
        # "auto": exact search for small sets, a compressed IVF index (built chunk by chunk from
        # the memory-mapped latents) for ImageNet-size ones. Ids are row positions.
        index = NeighborIndex(index="auto", distance=distance, device=device, seed=config.seed)
        index.build(z_train.flatten(1))
        _, pos = index.search(z_eval.flatten(1).to(device), k=config.k)
        gen = torch.Generator().manual_seed(config.seed)
        pick = torch.randint(0, config.k, (len(z_eval),), generator=gen)
        nn_idx = pos.cpu()[torch.arange(len(z_eval)), pick]
        n, dim = len(z_eval), None
        recon_feats, interp_feats, sq_err = [], [], []
        loader = study_loader(eval_ds, config)
        start = 0
        for images in tqdm(loader, desc=f"{name}:ifid", disable=not progress, leave=False):
            stop = start + len(images)
            z = z_eval[start:stop].to(device)
            z_nn = z_train[nn_idx[start:stop]].to(device)
            z_hat = interpolate(z, z_nn, config.interpolation, config.alpha, generator=None)
            both = decode(torch.cat([z, z_hat]))
            recon, interp = both[: len(z)], both[len(z) :]
            sq_err.append(((recon.cpu() - images.clamp(-1, 1)) ** 2).flatten(1).mean(1))
            with torch.no_grad():
                f = feature(torch.cat([recon, interp])).float().cpu().numpy()
            recon_feats.append(f[: len(z)])
            interp_feats.append(f[len(z) :])
            start = stop
        assert start == n, (start, n)
        recon_f, interp_f = np.concatenate(recon_feats), np.concatenate(interp_feats)
        dim = recon_f.shape[1]
        np.save(vae_dir / "features_recon.npy", recon_f)
        np.save(vae_dir / "features_interp.npy", interp_f)
        real = load_array(real_dir / "eval_features.npy")
        mse = torch.cat(sq_err)
        # Peak-to-peak range of [-1, 1] images is 2, so PSNR = 10 log10(4 / MSE).
        psnr = (10 * torch.log10(4.0 / mse.clamp_min(1e-12))).mean()
        return {
            "rfid": fid_from_features(recon_f, real),
            "ifid": fid_from_features(interp_f, real),
            "psnr": float(psnr),
            "num_eval": n,
            "feature_dim": dim,
        }

    rec = stages.run("reconstruction", ifid_key, reconstruction)

    ablation: dict[str, float] = {}
    if config.ifid_ablation:

        def ablation_stage() -> dict[str, Any]:
            return ifid_ablation(config, vae_dir, real_dir, eval_ds, decode, feature, device)

        ablation = stages.run(
            "ifid_ablation",
            {**data_key, **feature_key(config), "settings": config.ifid_ablation},
            ablation_stage,
        )

    # --- probes: one per seed; stage names and directories of seed index 0 keep the plain names
    def seed_stages(index: int) -> Stages:
        if index == 0:
            return stages
        return Stages(vae_dir / f"stages_s{index}.json", events, fallback=stages.path)

    chosen = range(config.seeds_of(name)) if probes is None else probes
    seeds_out = [
        run_probe_seed(
            config,
            index,
            vae_dir,
            real_dir,
            seed_stages(index),
            data_key,
            decode,
            feature,
            progress,
        )
        for index in chosen
    ]
    if probes is not None:
        return None
    first = seeds_out[0]
    sample_key = first["sample_key"]

    def split_half_stage() -> dict[str, Any]:
        # Each FID recomputed on two disjoint interleaved halves of its images (cached features):
        # how far the number moves with the sample alone, at half the study's sample count.
        real_eval = load_array(real_dir / "eval_features.npy")
        ref = load_array(real_dir / "reference_features.npy")
        halves: dict[str, list[float]] = {}
        for key, file, real in (
            ("rfid", "features_recon.npy", real_eval),
            ("ifid", "features_interp.npy", real_eval),
            ("gfid", "features_samples.npy", ref),
        ):
            feats = load_array(vae_dir / file)
            h = len(feats) // 2
            if key == "gfid":  # samples are independent of the reference: halve the samples only
                halves[key] = [
                    fid_from_features(feats[0 : 2 * h : 2], ref),
                    fid_from_features(feats[1 : 2 * h : 2], ref),
                ]
            else:  # paired with their source images: halve both sides together
                halves[key] = [
                    fid_from_features(feats[0 : 2 * h : 2], real[0 : 2 * h : 2]),
                    fid_from_features(feats[1 : 2 * h : 2], real[1 : 2 * h : 2]),
                ]
        return halves

    split = stages.run(
        "split_half",
        {
            **sample_key,
            "num_samples": config.num_samples,
            "num_reference": config.num_reference,
            "halves": "interleaved",
        },
        split_half_stage,
    )
    ts = list(first["gfid_t"])
    return {
        "name": name,
        "spec": spec,
        "latent_shape": lat["train"][1:],
        "time_shift": first["time_shift"],
        "split_half": split,
        **{k: rec[k] for k in ("rfid", "ifid", "psnr")},
        "probe_loss": float(np.mean([s["probe_loss"] for s in seeds_out])),
        "probe_steps": first["probe_steps"],
        "probe_seeds": [s["seed"] for s in seeds_out],
        "gfid": float(np.mean([s["gfid"] for s in seeds_out])),
        "gfid_seeds": [s["gfid"] for s in seeds_out],
        "gfid_heldout": float(np.mean([s["gfid_heldout"] for s in seeds_out])),
        "gfid_heldout_seeds": [s["gfid_heldout"] for s in seeds_out],
        **seed_fields(seeds_out),  # sampling standard errors and the spread over probe seeds
        "gfid_t": {t: float(np.mean([s["gfid_t"][t] for s in seeds_out])) for t in ts},
        "gfid_t_seeds": {t: [s["gfid_t"][t] for s in seeds_out] for t in ts},
        "gfid_t_se": {  # sampling standard error of the seed mean, as gfid_se
            t: seed_summary(
                [s["gfid_t"][t] for s in seeds_out], [s["gfid_t_se"][t] for s in seeds_out]
            )["se"]
            for t in ts
        },
        "irs": first["irs"],
        "ifid_ablation": ablation,
    }
