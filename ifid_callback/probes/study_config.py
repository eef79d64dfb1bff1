"""The settings of a study: :class:`StudyConfig`, the VAE names it derives and its feature key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .probe_config import ProbeTrainConfig

__all__ = ["StudyConfig", "feature_key", "vae_name"]


@dataclass
class StudyConfig:
    """Settings of a study (all JSON-able; saved as ``study.json``).

    Args:
        vaes: VAE specs: a Lightning-style ``.ckpt`` of a TinyVAE (the demo's or the zoo's), a
            diffusers directory or hub id, or ``"package.module:factory"``.
        out_dir: where every cached file and the report go.
        names: display names (default: derived from the specs, see :func:`vae_name`).
        train_data: ``"embedded"`` (the embedded photo patches, train split), ``"digits"``,
            ``"glyphs[:N]"`` / ``"glyphs-rgb[:N]"`` (N glyphs rendered from matplotlib's fonts,
            :class:`~ifid_callback.embedded_glyphs.EmbeddedGlyphs`) or an image folder;
            the probe is trained on these latents, and the gFID reference / IRS bank is drawn
            from these images.
        eval_data: ``"embedded"`` (val split) or an image folder of held-out images for rFID,
            iFID, PSNR and gFID(t).
        image_size: side of the (square) images.
        max_train: training images encoded for the probe (None: all).
        num_eval: held-out images (None: all).
        num_reference: training images whose features form the gFID reference and the IRS bank.
        num_samples: probe samples per gFID. The default, 50,000, comes from the rule
            "sampling standard error at most a third of the spread of gFID across probe seeds"
            on the measured curve (``docs/results/gfid_samples``, digits probes). There the
            standard error falls as ``1/sqrt(n)`` (3.4 at 1,000 samples, 0.94 at 10,000, 0.67
            at 20,000, 0.42 at 50,000) and the seed spread has a probe-training part of about 1
            gFID (0.95 to 1.3 from six seeds), so the rule holds from 43,000 to 80,000 samples
            depending on that estimate; 50,000, the standard gFID count, lies in that range
            (measured: 0.42 against a seed spread of 1.04). With fewer samples, sampling noise
            is much of the seed spread (at 1,000 all of it). On a budget, 20,000 samples with
            more probe seeds gives a less noisy seed mean per CPU second. Each gFID is reported
            with its standard error (``gfid_se``) and the seed spread.
        t_grid: noise levels of gFID(t), each in (0, 1) (t = 1 is gFID itself).
        feature: ``"inception"``, ``"inception-bf16"`` or ``"package.module:factory"``: one
            extractor for every FID of the study.
        interpolation, alpha, k, distance: iFID settings (nearest neighbours of the held-out
            latents in the training latents).
        probe: :class:`~ifid_callback.probes.probe_config.ProbeTrainConfig` fields (``device`` and
            ``seed`` come from this config). ``time_shift`` defaults to None (uniform training
            times and sampler grid) when not given: the ``"auto"`` rule ``sqrt(C*H*W / 4096)``
            was made for 32x32x4 latents and gives a different, extrapolated schedule to each
            small latent shape.
        probe_seeds: probes trained per VAE, with seeds ``seed, seed + 1, ...`` (initialisation,
            batch order, noise and sampling noise all differ between seeds, and are the same for
            every VAE at one seed: common random numbers); gFID and gFID(t) are reported per
            seed and as the mean, gFID with its standard error and spread over seeds.
        probe_by_vae: per VAE name, probe fields that replace ``probe``'s for that VAE (e.g.
            ``{"patch_size": 4}``, so that latents of different shapes give the same tokens).
        probe_seeds_by_vae: per VAE name, its number of probes (instead of ``probe_seeds``).
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
    num_samples: int = 50000  # see the docstring: chosen from docs/results/gfid_samples
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
    probe_by_vae: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_seeds_by_vae: dict[str, int] = field(default_factory=dict)
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
        self._check_per_vae(names)

    def _check_per_vae(self, names: list[str]) -> None:
        for what in ("probe_by_vae", "probe_seeds_by_vae"):
            unknown = sorted(set(getattr(self, what)) - set(names))
            if unknown:
                raise ValueError(f"{what} names unknown VAEs {unknown}; known: {names}")
        for name, count in self.probe_seeds_by_vae.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"probe_seeds_by_vae[{name!r}] must be an int >= 1, got {count!r}")
        for name in self.probe_by_vae:
            self.probe_config(0, name)

    def seeds_of(self, name: str) -> int:
        """How many probes VAE ``name`` gets."""
        return int(self.probe_seeds_by_vae.get(name, self.probe_seeds))

    def resolved_names(self) -> list[str]:
        return list(self.names) if self.names is not None else [vae_name(s) for s in self.vaes]

    def probe_config(self, index: int = 0, name: str | None = None) -> ProbeTrainConfig:
        """The recipe of probe ``index`` (of ``probe_seeds``) of VAE ``name``: seed
        ``seed + index``, with ``probe_by_vae[name]`` applied."""
        own = self.probe_by_vae.get(name, {}) if name is not None else {}
        return ProbeTrainConfig.from_dict(
            {**self.probe, **own, "device": self.device, "seed": self.seed + index}
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


def feature_key(config: StudyConfig) -> dict[str, Any]:
    return {"feature": config.feature, "image_size": config.image_size}
