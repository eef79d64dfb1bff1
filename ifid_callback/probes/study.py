"""The offline gFID study: for each VAE, rFID/iFID/PSNR, a trained SiT probe, gFID, gFID(t), IRS.

Every stage is cached on disk, so an interrupted run resumes where it stopped::

    <out>/study.json                    the configuration of the run
    <out>/events.jsonl                  one line per stage computed (name, seconds, time)
    <out>/real/                         features of the held-out and reference real images,
                                        FID noise floors (shared by all VAEs)
    <out>/vaes/<name>/stages.json       per stage: the settings it depends on, its result, when
    <out>/vaes/<name>/latents_*.npy     latents, memory-mapped (written and read in batches)
    <out>/vaes/<name>/features_*.npy    features of reconstructions, interpolants, samples...
    <out>/vaes/<name>/probe/            the probe's checkpoints, TensorBoard log and probe.pt
    <out>/vaes/<name>/samples.png       a grid of decoded probe samples
    <out>/report/                       results.json, results.csv, results.md, scatter PNGs

A stage is redone only when the settings it depends on changed (its ``key``); finished stages of
an interrupted run are read back, and the probe's own checkpoints resume a half-trained probe.
Nothing holds a whole dataset in memory: images are streamed from a DataLoader, latents and
features go to memory-mapped ``.npy`` files, so the same code runs on ImageNet-size folders on a
GPU (``device="cuda"``, larger batch sizes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .gfid import (
    extract_features,
    fid_from_features,
    generated_features,
    regenerated_features,
    resolve_study_feature,
)
from .irs import image_retrieval_score
from .train import ProbeTrainConfig, TrainedProbe, train_probe

__all__ = ["StudyConfig", "load_study", "load_study_vae", "run_study", "vae_name"]

_STUDY_FORMAT = 1


@dataclass
class StudyConfig:
    """Settings of a study (all JSON-able; saved as ``study.json``).

    Args:
        vaes: VAE specs: a Lightning-style ``.ckpt`` of a TinyVAE (the demo's or the zoo's), a
            diffusers directory or hub id, or ``"package.module:factory"``.
        out_dir: where every cached file and the report go.
        names: display names (default: derived from the specs, see :func:`vae_name`).
        train_data: ``"embedded"`` (the embedded photo patches, train split) or an image folder;
            the probe is trained on these latents, and the gFID reference / IRS bank is drawn
            from these images.
        eval_data: ``"embedded"`` (val split) or an image folder of held-out images for rFID,
            iFID, PSNR and gFID(t).
        image_size: side of the (square) images.
        max_train: training images encoded for the probe (None: all).
        num_eval: held-out images (None: all).
        num_reference: training images whose features form the gFID reference and the IRS bank.
        num_samples: probe samples per gFID.
        t_grid: noise levels of gFID(t), each in (0, 1) (t = 1 is gFID itself).
        feature: ``"inception"``, ``"inception-bf16"`` or ``"package.module:factory"``: one
            extractor for every FID of the study.
        interpolation, alpha, k, distance: iFID settings (nearest neighbours of the held-out
            latents in the training latents).
        probe: :class:`~ifid_callback.probes.train.ProbeTrainConfig` fields (``device`` and
            ``seed`` come from this config). ``time_shift`` defaults to None (uniform training
            times and sampler grid) when not given: the ``"auto"`` rule ``sqrt(C*H*W / 4096)``
            was made for 32x32x4 latents and gives a different, extrapolated schedule to each
            small latent shape.
        probe_seeds: probes trained per VAE, with seeds ``seed, seed + 1, ...`` (initialisation,
            batch order, noise and sampling noise all differ); gFID and gFID(t) are reported
            per seed and as the mean.
        sampler, sampling_steps: probe sampler for gFID and gFID(t).
        ifid_ablation: extra iFID settings, each ``{"interpolation", "alpha", "k"}``: iFID is
            recomputed for each (the paper's ablations) and correlated with gFID in the report.
        groups: named subsets of the VAE names (families); the report compares iFID with rFID
            within each group as well as over all VAEs.
        irs_distance: feature-space distance of the IRS retrieval.
        device: torch device for the VAEs, the probes and the feature extractor.
        batch_size: images per encode/decode/feature batch.
        sample_batch_size: latents per sampling batch.
        num_workers: DataLoader workers.
        seed: seeds subsets, probes, sampling noise.
    """

    vaes: list[str]
    out_dir: str
    names: list[str] | None = None
    train_data: str = "embedded"
    eval_data: str = "embedded"
    image_size: int = 32
    max_train: int | None = None
    num_eval: int | None = 1000
    num_reference: int = 2000
    num_samples: int = 1000
    t_grid: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    feature: str = "inception"
    interpolation: str = "slerp"
    alpha: float = 0.5
    k: int = 1
    distance: str | None = None
    probe: dict[str, Any] = field(
        default_factory=lambda: {"size": "tiny", "steps": 2000, "batch_size": 128}
    )
    probe_seeds: int = 2
    sampler: str = "euler"
    sampling_steps: int = 50
    ifid_ablation: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    irs_distance: str = "sqeuclidean"
    device: str = "cpu"
    batch_size: int = 64
    sample_batch_size: int = 256
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.vaes:
            raise ValueError("a study needs at least one VAE spec")
        if self.names is not None and len(self.names) != len(self.vaes):
            raise ValueError(f"got {len(self.names)} names for {len(self.vaes)} VAEs")
        names = self.resolved_names()
        if len(set(names)) != len(names):
            raise ValueError(f"VAE names must be unique, got {names}; pass names=[...]")
        for t in self.t_grid:
            if not 0.0 < float(t) < 1.0:
                raise ValueError(f"t_grid values must lie in (0, 1), got {t!r}")
        for name in ("num_reference", "num_samples", "batch_size", "sample_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")
        if isinstance(self.probe_seeds, bool) or not isinstance(self.probe_seeds, int):
            raise ValueError(f"probe_seeds must be an int >= 1, got {self.probe_seeds!r}")
        if self.probe_seeds < 1:
            raise ValueError(f"probe_seeds must be an int >= 1, got {self.probe_seeds!r}")
        self.probe = {"time_shift": None, **self.probe}
        for setting in self.ifid_ablation:
            if set(setting) != {"interpolation", "alpha", "k"}:
                raise ValueError(
                    f"each ifid_ablation entry needs exactly interpolation, alpha and k; got "
                    f"{setting!r}"
                )
        for group, members in self.groups.items():
            unknown = sorted(set(members) - set(names))
            if unknown:
                raise ValueError(f"group {group!r} names unknown VAEs {unknown}; known: {names}")
        ProbeTrainConfig.from_dict({**self.probe, "device": self.device, "seed": self.seed})

    def resolved_names(self) -> list[str]:
        return list(self.names) if self.names is not None else [vae_name(s) for s in self.vaes]

    def probe_config(self, index: int = 0) -> ProbeTrainConfig:
        """The recipe of probe ``index`` (of ``probe_seeds``): seed ``seed + index``."""
        return ProbeTrainConfig.from_dict(
            {**self.probe, "device": self.device, "seed": self.seed + index}
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        return cls(**data)


def vae_name(spec: str) -> str:
    """A short name for a VAE spec: the file or directory stem, or the factory's name."""
    if ":" in spec and not Path(spec).exists():
        return spec.rpartition(":")[2]
    path = Path(spec.rstrip("/"))
    return path.stem if path.suffix in (".ckpt", ".pt", ".pth") else path.name


def load_study_vae(spec: str, device: torch.device | str = "cpu") -> Any:
    """Load a VAE: a ``.ckpt``/``.pt`` Lightning-style TinyVAE checkpoint, else
    :func:`ifid_callback.loading.load_vae` (diffusers directory, hub id, factory path)."""
    path = Path(spec)
    if path.is_file() and path.suffix in (".ckpt", ".pt", ".pth"):
        from .zoo import load_vae_checkpoint

        return load_vae_checkpoint(path, device)
    from ..loading import load_vae

    return load_vae(spec, device)


# ------------------------------------------------------------------------------------ caching


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class _Stages:
    """The ``stages.json`` of one VAE (or of the shared real-image stage)."""

    def __init__(self, path: Path, events: Path) -> None:
        self.path = path
        self.events = events
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, stage: str, key: dict[str, Any]) -> dict[str, Any] | None:
        entry = self.data.get(stage)
        if entry is not None and entry.get("key") == key:
            return entry["result"]
        return None

    def put(self, stage: str, key: dict[str, Any], result: dict[str, Any], seconds: float) -> None:
        self.data[stage] = {"key": key, "result": result, "finished_at": _now(), "seconds": seconds}
        _write_json(self.path, self.data)
        with self.events.open("a") as fh:
            fh.write(
                json.dumps(
                    {
                        "stage": stage,
                        "file": str(self.path.parent.name),
                        "seconds": round(seconds, 3),
                        "at": _now(),
                    }
                )
                + "\n"
            )

    def run(
        self, stage: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        cached = self.get(stage, key)
        if cached is not None:
            return cached
        started = time.time()
        result = compute()
        self.put(stage, key, result, time.time() - started)
        return result


def _open_memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def _load_array(path: Path) -> np.ndarray:
    # Copy-on-write mapping: readable as a writable array (torch.from_numpy needs that) without
    # loading it or touching the file.
    return np.load(path, mmap_mode="c")


def _finish_array(tmp_path: Path, array: np.ndarray, final: Path) -> None:
    if isinstance(array, np.memmap):
        array.flush()
    del array
    os.replace(tmp_path, final)


# ------------------------------------------------------------------------------------ data


class _Images(Dataset):
    """Images only, whatever the underlying dataset's items are."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        from ..evaluate import images_of

        return images_of(self.dataset[index])


def _dataset(spec: str, split: str, size: int, limit: int | None, seed: int) -> Dataset:
    if spec == "embedded":
        from ..data import EmbeddedPatches

        base: Dataset = EmbeddedPatches(split=split, size=size)
    elif spec == "digits":
        from ..data import EmbeddedDigits

        if size != 8:
            raise ValueError(f"the digits are 8x8: set image_size=8, got {size!r}")
        base = EmbeddedDigits(split=split)
    else:
        from ..data import ImageFolder

        if not Path(spec).is_dir():
            raise ValueError(f"data must be 'embedded', 'digits' or an image folder, got {spec!r}")
        base = ImageFolder(spec, size=size)
    n = len(base)  # type: ignore[arg-type]
    if limit is not None and limit < n:
        # A seeded subset in index order (sequential reads stay sequential on disk).
        keep = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
        base = Subset(base, keep.tolist())
    return _Images(base)


def _loader(dataset: Dataset, config: StudyConfig) -> DataLoader:
    return DataLoader(
        dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers
    )


# ------------------------------------------------------------------------------------ the study


def _feature_key(config: StudyConfig) -> dict[str, Any]:
    return {"feature": config.feature, "image_size": config.image_size}


def _real_stage(
    config: StudyConfig, feature: nn.Module, out: Path, events: Path, progress: bool
) -> dict[str, Any]:
    """Features of the held-out and reference real images, and FID noise floors."""
    from tqdm.auto import tqdm

    real_dir = out / "real"
    stages = _Stages(real_dir / "stages.json", events)
    eval_ds = _dataset(config.eval_data, "val", config.image_size, config.num_eval, config.seed)
    ref_ds = _dataset(
        config.train_data, "train", config.image_size, config.num_reference, config.seed + 1
    )

    def featurise(ds: Dataset, name: str) -> Callable[[], dict[str, Any]]:
        def compute() -> dict[str, Any]:
            tmp = real_dir / f"{name}.tmp.npy"
            dim = _feature_dim(feature, ds, config)
            arr = _open_memmap(tmp, (len(ds), dim))  # type: ignore[arg-type]
            batches = tqdm(_loader(ds, config), desc=name, disable=not progress, leave=False)
            extract_features(batches, feature, device=config.device, out=arr)
            _finish_array(tmp, arr, real_dir / f"{name}.npy")
            return {"count": len(ds), "dim": dim}  # type: ignore[arg-type]

        return compute

    base_key = {**_feature_key(config), "seed": config.seed}
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
        ev = _load_array(real_dir / "eval_features.npy")
        ref = _load_array(real_dir / "reference_features.npy")
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


def _run_vae(
    config: StudyConfig,
    spec: str,
    name: str,
    feature: nn.Module,
    out: Path,
    events: Path,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from ..functional.interpolation import interpolate
    from ..index import NeighborIndex
    from ..vae import VAEAdapter

    vae_dir = out / "vaes" / name
    stages = _Stages(vae_dir / "stages.json", events)
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
    train_ds = _dataset(
        config.train_data, "train", config.image_size, config.max_train, config.seed + 2
    )
    eval_ds = _dataset(config.eval_data, "val", config.image_size, config.num_eval, config.seed)

    def encode_all(ds: Dataset, stem: str) -> dict[str, Any]:
        arr, filled = None, 0
        tmp = vae_dir / f"{stem}.tmp.npy"
        for images in tqdm(
            _loader(ds, config), desc=f"{name}:{stem}", disable=not progress, leave=False
        ):
            with torch.no_grad():
                z = adapter.encode(images.to(device)).float()
            if not torch.isfinite(z).all():
                raise ValueError(f"VAE {name} produced NaN/Inf latents")
            if arr is None:
                arr = _open_memmap(tmp, (len(ds), *z.shape[1:]))  # type: ignore[arg-type]
            arr[filled : filled + len(z)] = z.cpu().numpy()
            filled += len(z)
        if arr is None:
            raise ValueError(f"no images in {stem}")
        shape = list(arr.shape)
        _finish_array(tmp, arr, vae_dir / f"{stem}.npy")
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
        **_feature_key(config),
        "interpolation": config.interpolation,
        "alpha": config.alpha,
        "k": config.k,
        "distance": config.distance,
    }

    def reconstruction() -> dict[str, Any]:
        z_train = torch.from_numpy(_load_array(vae_dir / "latents_train.npy"))
        z_eval = torch.from_numpy(_load_array(vae_dir / "latents_eval.npy"))
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
        loader = _loader(eval_ds, config)
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
        real = _load_array(real_dir / "eval_features.npy")
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
            return _ifid_ablation(config, vae_dir, real_dir, eval_ds, decode, feature, device)

        ablation = stages.run(
            "ifid_ablation",
            {**data_key, **_feature_key(config), "settings": config.ifid_ablation},
            ablation_stage,
        )

    # --- probes: one per seed; stage names and directories of seed index 0 keep the plain names
    seeds_out = [
        _run_probe_seed(
            config, index, vae_dir, real_dir, stages, data_key, decode, feature, progress
        )
        for index in range(config.probe_seeds)
    ]
    first = seeds_out[0]
    sample_key = first["sample_key"]

    def split_half_stage() -> dict[str, Any]:
        # Each FID recomputed on two disjoint interleaved halves of its images (cached features):
        # how far the number moves with the sample alone, at half the study's sample count.
        real_eval = _load_array(real_dir / "eval_features.npy")
        ref = _load_array(real_dir / "reference_features.npy")
        halves: dict[str, list[float]] = {}
        for key, file, real in (
            ("rfid", "features_recon.npy", real_eval),
            ("ifid", "features_interp.npy", real_eval),
            ("gfid", "features_samples.npy", ref),
        ):
            feats = _load_array(vae_dir / file)
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
        "gfid_t": {t: float(np.mean([s["gfid_t"][t] for s in seeds_out])) for t in ts},
        "gfid_t_seeds": {t: [s["gfid_t"][t] for s in seeds_out] for t in ts},
        "irs": first["irs"],
        "ifid_ablation": ablation,
    }


def ablation_label(setting: dict[str, Any]) -> str:
    """``"slerp a=0.5 k=1"``: the name of an iFID setting in reports."""
    return f"{setting['interpolation']} a={float(setting['alpha']):g} k={int(setting['k'])}"


def _ifid_ablation(
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

    z_train = torch.from_numpy(_load_array(vae_dir / "latents_train.npy"))
    z_eval = torch.from_numpy(np.ascontiguousarray(_load_array(vae_dir / "latents_eval.npy")))
    real = _load_array(real_dir / "eval_features.npy")
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


def _run_probe_seed(
    config: StudyConfig,
    index: int,
    vae_dir: Path,
    real_dir: Path,
    stages: _Stages,
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
    probe_cfg = config.probe_config(index)
    probe_key = {
        **data_key,
        "probe": {
            k: v
            for k, v in probe_cfg.to_dict().items()
            if k not in ("checkpoint_every", "keep_checkpoints", "log_every")
        },
    }

    def probe_stage() -> dict[str, Any]:
        z_train = torch.from_numpy(_load_array(vae_dir / "latents_train.npy"))
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
        **_feature_key(config),
        "sampler": config.sampler,
        "sampling_steps": config.sampling_steps,
    }
    # Sampling noise differs between probe seeds too, so the seed spread includes it.
    sample_seed = config.seed + 3 + 1000 * index

    def gfid_stage() -> dict[str, Any]:
        tmp = samples_file.with_name(samples_file.stem + ".tmp.npy")
        ref = _load_array(real_dir / "reference_features.npy")
        arr = _open_memmap(tmp, (config.num_samples, ref.shape[1]))
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
        _finish_array(tmp, arr, samples_file)
        if images is not None:
            from .sampling import save_image_grid

            save_image_grid(images, vae_dir / f"samples{file_suffix}.png", nrow=8)
        feats = _load_array(samples_file)
        held_out = _load_array(real_dir / "eval_features.npy")
        return {
            "gfid": fid_from_features(feats, ref),
            # Against held-out images: a probe that memorised the training images scores no
            # better here than one that generalises.
            "gfid_heldout": fid_from_features(feats, held_out),
            "num_samples": config.num_samples,
        }

    gf = stages.run(
        f"gfid{suffix}",
        {
            **sample_key,
            "num_samples": config.num_samples,
            "num_reference": config.num_reference,
            "heldout": [config.eval_data, config.num_eval],
        },
        gfid_stage,
    )

    gfid_t: dict[str, float] = {}
    for t in config.t_grid:
        label = f"{float(t):g}"

        def gfid_t_stage(t: float = float(t), label: str = label) -> dict[str, Any]:
            z_eval = _load_array(vae_dir / "latents_eval.npy")
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
            real = _load_array(real_dir / "eval_features.npy")
            return {"gfid_t": fid_from_features(feats, real), "t": t}

        gfid_t[label] = stages.run(
            f"gfid_t={label}{suffix}", {**sample_key, "t": float(t)}, gfid_t_stage
        )["gfid_t"]

    def irs_stage() -> dict[str, Any]:
        feats = _load_array(samples_file)
        ref = _load_array(real_dir / "reference_features.npy")
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
        "gfid_t": gfid_t,
        "irs": irs,
    }


def _mtime(spec: str) -> float | None:
    path = Path(spec)
    return round(path.stat().st_mtime, 3) if path.exists() else None


def run_study(
    config: StudyConfig,
    *,
    feature: nn.Module | None = None,
    progress: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run (or resume) a study and write its report.

    Args:
        config: the :class:`StudyConfig`.
        feature: an extractor to use instead of resolving ``config.feature`` (which still names
            it in the cache keys).
        progress: tqdm progress bars.
        report: write ``<out>/report`` (see :mod:`ifid_callback.probes.report`) at the end.
        log: where one-line progress messages go (None: silent).

    Returns:
        ``{"config", "real", "vaes": [per-VAE results], "report": paths or None}``.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "study.json", {"format": _STUDY_FORMAT, "config": config.to_dict()})
    events = out / "events.jsonl"
    say = log or (lambda _msg: None)
    feat = resolve_study_feature(feature if feature is not None else config.feature)
    feat = feat.to(config.device)
    started = time.time()
    real = _real_stage(config, feat, out, events, progress)
    say(f"real images: gFID floor {real['gfid_floor']:.2f} (n={real['gfid_floor_n']})")
    rows = []
    for spec, name in zip(config.vaes, config.resolved_names(), strict=True):
        row = _run_vae(config, spec, name, feat, out, events, progress)
        rows.append(row)
        ts = " ".join(f"{t}:{v:.1f}" for t, v in row["gfid_t"].items())
        say(
            f"{name}: rFID {row['rfid']:.2f} iFID {row['ifid']:.2f} PSNR {row['psnr']:.2f} "
            f"gFID {row['gfid']:.2f} gFID(t) {ts} IRS {row['irs']['irs']:.3f} "
            f"[{time.time() - started:.0f}s]"
        )
    result: dict[str, Any] = {
        "config": config.to_dict(),
        "real": real,
        "vaes": rows,
        "report": None,
    }
    _write_json(out / "results_raw.json", result)
    if report:
        from .report import write_report

        result["report"] = {k: str(v) for k, v in write_report(result, out / "report").items()}
    return result


def load_study(out_dir: str | os.PathLike) -> StudyConfig:
    """The :class:`StudyConfig` saved in a study directory."""
    data = json.loads((Path(out_dir) / "study.json").read_text())
    return StudyConfig.from_dict(data["config"])
