"""The digits study: a zoo built so that iFID's regime can appear, with a positive control.

``ifid-probe study --dataset digits --out runs/digits`` trains (or finds) everything below,
runs the gFID study on it and writes the report; every stage is cached, so an interrupted run
resumes, and the VAEs' training, the VAEs and their probes split over torchrun's ranks or
``--shard`` (:mod:`ifid_callback.probes.shard`). The zoo, all on 8x8 digits:

* **A, natural family** (4x4x4 latents): an autoencoder; KL weights 1e-4 / 1e-3 / 1e-2; KL 1e-3
  with relative latent-noise augmentation; KL 1e-3 plus a VA-VAE-style alignment of the latent to
  the frozen digit classifier's 4x4 feature maps at three weights.
* **B, positive control**: the autoencoder of A composed with invertible latent maps (applied
  after the encoder, undone before the decoder; :mod:`ifid_callback.probes.invertible`): a channel
  rotation (the null), a smooth warp at two strengths and value shuffles from local (neighbouring
  bins swap) to global (all bins permuted). Reconstructions, hence rFID, are those of the base.
* **C, channel sweep**: autoencoders with 1, 2, 4 (A's) and 8 latent channels.

FIDs use the digit classifier's penultimate layer (``feature="digits"``), not Inception.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .stages import write_json
from .zoo import ZooMember

__all__ = [
    "DEFAULT_ABLATION",
    "DIGITS_FAMILY_A",
    "DIGITS_FAMILY_B",
    "DIGITS_FAMILY_C",
    "DigitsStudySettings",
    "digits_member",
    "run_digits_study",
    "train_digits_vae",
    "wrap_digits_control",
]

DIGITS_FAMILY_A: tuple[ZooMember, ...] = (
    ZooMember("ae", 4),
    ZooMember("kl1e-4", 4, kl_weight=1e-4),
    ZooMember("kl1e-3", 4, kl_weight=1e-3),
    ZooMember("kl1e-2", 4, kl_weight=1e-2),
    ZooMember("kl1e-3-noise0.3", 4, kl_weight=1e-3, latent_noise=0.3),
    ZooMember("kl1e-3-align0.01", 4, kl_weight=1e-3, align_weight=0.01),
    ZooMember("kl1e-3-align0.1", 4, kl_weight=1e-3, align_weight=0.1),
    ZooMember("kl1e-3-align1", 4, kl_weight=1e-3, align_weight=1.0),
)

#: Positive control: ``(name, map spec)`` on the autoencoder ``ae``; ``scale`` is filled in with
#: the standard deviation of its training latents.
DIGITS_FAMILY_B: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ae-rotation", {"kind": "rotation", "channels": 4, "seed": 0}),
    ("ae-warp0.5", {"kind": "warp", "strength": 0.5}),
    ("ae-warp0.9", {"kind": "warp", "strength": 0.9}),
    ("ae-shuffle-b2", {"kind": "shuffle", "block": 2, "num_bins": 24, "seed": 0}),
    ("ae-shuffle-b4", {"kind": "shuffle", "block": 4, "num_bins": 24, "seed": 0}),
    ("ae-shuffle-b8", {"kind": "shuffle", "block": 8, "num_bins": 24, "seed": 0}),
    ("ae-shuffle-b24", {"kind": "shuffle", "block": 24, "num_bins": 24, "seed": 0}),
)

DIGITS_FAMILY_C: tuple[ZooMember, ...] = (
    ZooMember("ae-c1", 1),
    ZooMember("ae-c2", 2),
    ZooMember("ae-c8", 8),
)

#: The paper's ablations (Tables 4-5): alpha with slerp and k = 1, linear / mask at 0.5, k = 10.
DEFAULT_ABLATION: tuple[dict[str, Any], ...] = (
    *({"interpolation": "slerp", "alpha": a, "k": 1} for a in (0.1, 0.3, 0.7, 0.9)),
    {"interpolation": "slerp", "alpha": 0.5, "k": 1},
    {"interpolation": "linear", "alpha": 0.5, "k": 1},
    {"interpolation": "mask", "alpha": 0.5, "k": 1},
    {"interpolation": "slerp", "alpha": 0.5, "k": 10},
)


@dataclass
class DigitsStudySettings:
    """Budget and recipe of the digits study (see the module docstring for the zoo).

    Attributes:
        out: study directory (``zoo/``, the cached stages, ``report/``).
        vae_steps, vae_batch_size, vae_lr, base_channels: VAE training (AdamW, cosine decay).
        probe_steps, probe_batch_size, probe_lr, probe_ema, probe_overrides, patch_size: the SiT
            probe (``size="tiny"`` with ``probe_overrides``); uniform time (``time_shift``).
        probe_seeds: probes per VAE.
        num_samples, sampling_steps, sampler: gFID sampling (fixed sampler and step count).
            ``num_samples=1000`` is the recipe of the committed ``docs/results/digits`` study
            and of the demo's pair check (their recorded recipe keys include it). At 1,000 the
            spread of gFID across probe seeds is mostly sampling noise (3.3 over six seeds, SE
            3.4). ``docs/results/gfid_samples`` measures the curve: StudyConfig's default is
            50,000 (standard error 0.42); 20,000 (0.67) with more probe seeds is the cheaper
            way to a steady seed mean.
        t_grid: gFID(t) noise levels.
        ablation: iFID settings of the ablations.
        families: which families to build ("A", "B", "C").
        seed: seeds the zoo, the probes and the sampling.
    """

    out: str
    vae_steps: int = 2000
    vae_batch_size: int = 64
    vae_lr: float = 2e-3
    base_channels: int = 16
    probe_steps: int = 3000
    probe_batch_size: int = 64
    probe_lr: float = 1e-3
    probe_ema: float = 0.999
    probe_overrides: dict[str, Any] = field(
        default_factory=lambda: {"depth": 3, "hidden_size": 128, "num_heads": 4}
    )
    patch_size: int = 2
    time_shift: float | str | None = None
    probe_seeds: int = 2
    num_samples: int = 1000
    sampling_steps: int = 25
    sampler: str = "euler"
    t_grid: list[float] = field(default_factory=lambda: [0.3, 0.6])
    ablation: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_ABLATION))
    families: str = "ABC"
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        fams = self.families.upper()
        if not fams or set(fams) - set("ABC"):
            raise ValueError(f"families must be letters from 'ABC', got {self.families!r}")
        for name in ("vae_steps", "probe_steps", "probe_seeds", "num_samples", "sampling_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples!r}")

    def probe_recipe(self) -> dict[str, Any]:
        """The probe's :class:`~ifid_callback.probes.probe_config.ProbeTrainConfig` fields (no
        seed)."""
        return {
            "size": "tiny",
            "patch_size": self.patch_size,
            "steps": self.probe_steps,
            "batch_size": self.probe_batch_size,
            "lr": self.probe_lr,
            "ema_decay": self.probe_ema,
            "model_overrides": dict(self.probe_overrides),
            "time_shift": self.time_shift,
        }

    @classmethod
    def smoke(cls, out: str) -> DigitsStudySettings:
        """Tiny settings that run the whole pipeline in about a minute (numbers meaningless)."""
        return cls(
            out=out,
            vae_steps=15,
            base_channels=8,
            probe_steps=10,
            probe_batch_size=64,
            probe_overrides={"depth": 1, "hidden_size": 32, "num_heads": 2},
            num_samples=64,
            sampling_steps=3,
            t_grid=[0.5],
            ablation=[
                {"interpolation": "slerp", "alpha": 0.3, "k": 1},
                {"interpolation": "mask", "alpha": 0.5, "k": 3},
            ],
        )


class _SpatialTeacher(nn.Module):
    """The frozen digit classifier's 4x4 feature maps: the alignment target of family A."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        return self.features.spatial(x)


def _latent_std(path: Path, images: Tensor) -> float:
    from .zoo import load_vae_checkpoint

    vae = load_vae_checkpoint(path)
    with torch.no_grad():
        z = torch.cat([vae.encode(images[i : i + 256]).mean for i in range(0, len(images), 256)])
    return float(z.std())


def digits_member(name: str) -> ZooMember | None:
    """The trained member of families A and C called ``name``; None for B's wrapped names."""
    for member in (*DIGITS_FAMILY_A, *DIGITS_FAMILY_C):
        if member.name == name:
            return member
    if name in dict(DIGITS_FAMILY_B):
        return None
    known = [m.name for m in (*DIGITS_FAMILY_A, *DIGITS_FAMILY_C)] + list(dict(DIGITS_FAMILY_B))
    raise ValueError(f"no digits zoo member {name!r}; known: {known}")


def train_digits_vae(
    member: ZooMember,
    settings: DigitsStudySettings,
    zoo_dir: Path,
    feature: nn.Module,
    seed: int,
    progress: bool = True,
) -> Path:
    """Train (or find) ``member`` with the study's VAE recipe and ``seed``: ``<zoo_dir>/<name>.ckpt``.

    ``feature`` is the digit classifier; members with an alignment weight align their latent to
    its 4x4 feature maps.
    """
    from ..data import EmbeddedDigits
    from .zoo import train_zoo_member

    aligned = member.align_weight > 0
    key = str(getattr(feature, "info", {}).get("key", "custom"))
    return train_zoo_member(
        member,
        EmbeddedDigits("train").as_tensor(),
        Path(zoo_dir) / f"{member.name}.ckpt",
        steps=settings.vae_steps,
        batch_size=settings.vae_batch_size,
        lr=settings.vae_lr,
        base_channels=settings.base_channels,
        downsamples=1,
        seed=seed,
        progress=progress,
        teacher=_SpatialTeacher(feature) if aligned else None,
        teacher_name=f"digit-classifier-{key}" if aligned else None,
    )


def wrap_digits_control(
    name: str, base: Path, zoo_dir: Path, images: Tensor | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the positive-control member ``name`` (family B) on the trained autoencoder ``base``.

    Warps and shuffles are scaled by the std of the base's latents of the training digits
    (``images``, default all of them). Returns the checkpoint's path and the full map spec.
    """
    from ..data import EmbeddedDigits
    from .zoo import write_wrapped_checkpoint

    spec = dict(dict(DIGITS_FAMILY_B)[name])
    if spec["kind"] in ("warp", "shuffle"):
        x = images if images is not None else EmbeddedDigits("train").as_tensor()
        spec["scale"] = round(_latent_std(Path(base), x), 6)
    return write_wrapped_checkpoint(base, Path(zoo_dir) / f"{name}.ckpt", spec), spec


def _trained_members(settings: DigitsStudySettings) -> list[ZooMember]:
    fams = settings.families.upper()
    trained: list[ZooMember] = [DIGITS_FAMILY_A[0]]  # the autoencoder: base of B, c4 of C
    if "A" in fams:
        trained += list(DIGITS_FAMILY_A[1:])
    if "C" in fams:
        trained += list(DIGITS_FAMILY_C)
    return trained


def digits_zoo_plan(settings: DigitsStudySettings) -> dict[str, Any]:
    """The zoo's checkpoints before any is trained: ``{"specs", "names", "groups"}``."""
    zoo_dir = Path(settings.out) / "zoo"
    fams = settings.families.upper()
    names = [m.name for m in _trained_members(settings)]
    if "B" in fams:
        names += [name for name, _ in DIGITS_FAMILY_B]
    groups: dict[str, list[str]] = {}
    if "A" in fams:
        groups["A"] = [m.name for m in DIGITS_FAMILY_A]
    if "B" in fams:
        groups["B"] = ["ae", *(name for name, _ in DIGITS_FAMILY_B)]
    if "A" in groups and "B" in groups:
        groups["A+B"] = list(dict.fromkeys(groups["A"] + groups["B"]))
    if "C" in fams:
        groups["C"] = ["ae-c1", "ae-c2", "ae", "ae-c8"]
    specs = [str(zoo_dir / f"{n}.ckpt") for n in names]
    return {"specs": specs, "names": names, "groups": groups}


def digits_zoo_jobs(
    settings: DigitsStudySettings, feature: Callable[[], nn.Module], progress: bool = True
) -> tuple[list[Any], dict[str, tuple[str, ...]]]:
    """Building the zoo as jobs (:mod:`~ifid_callback.probes.shard`): ``train/<name>`` per
    trained member, ``wrap/<name>`` per positive-control member (needs ``train/ae``); and per
    VAE name, the job that makes its checkpoint. ``feature()`` gives the digit classifier."""
    from .shard import Job

    zoo_dir = Path(settings.out) / "zoo"
    recipe = {k: v for k, v in dataclasses.asdict(settings).items() if k.startswith("vae_")}
    recipe.update(base_channels=settings.base_channels, seed=settings.seed)

    def train(member: ZooMember) -> Callable[[], Any]:
        return lambda: train_digits_vae(
            member, settings, zoo_dir, feature(), settings.seed, progress
        )

    def wrap(name: str) -> Callable[[], Any]:
        return lambda: wrap_digits_control(name, zoo_dir / "ae.ckpt", zoo_dir)

    jobs = [Job(f"train/{m.name}", train(m), key=recipe) for m in _trained_members(settings)]
    if "B" in settings.families.upper():
        jobs += [Job(f"wrap/{n}", wrap(n), ("train/ae",)) for n, _ in DIGITS_FAMILY_B]
    needs = {job.name.partition("/")[2]: (job.name,) for job in jobs}
    return jobs, needs


def build_digits_zoo(
    settings: DigitsStudySettings, feature: nn.Module | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train (or find) the zoo's VAEs and write the positive control's wrapped checkpoints.

    Returns ``{"specs": [checkpoint paths], "names": [...], "groups": {family: names},
    "members": {name: recipe}}``; ``zoo/zoo.json`` records the same.
    """
    from ..data import EmbeddedDigits
    from .digit_features import digit_features

    zoo_dir = Path(settings.out) / "zoo"
    zoo_dir.mkdir(parents=True, exist_ok=True)
    images = EmbeddedDigits("train").as_tensor()
    teacher_features = feature if feature is not None else digit_features()
    plan = digits_zoo_plan(settings)
    members: dict[str, Any] = {}
    for m in _trained_members(settings):
        train_digits_vae(m, settings, zoo_dir, teacher_features, settings.seed, progress)
        members[m.name] = m.to_dict()
    if "B" in plan["groups"]:
        for name, _ in DIGITS_FAMILY_B:
            _, full = wrap_digits_control(name, zoo_dir / "ae.ckpt", zoo_dir, images)
            members[name] = {"base": "ae", "latent_map": full}
    specs, names, groups = plan["specs"], plan["names"], plan["groups"]
    listing = {"names": names, "checkpoints": [Path(s).name for s in specs], "members": members}
    write_json(zoo_dir / "zoo.json", {**listing, "groups": groups})
    return {"specs": specs, "names": names, "groups": groups, "members": members}


def digits_study_config(settings: DigitsStudySettings, zoo: dict[str, Any]) -> Any:
    """The :class:`~ifid_callback.probes.study.StudyConfig` of the digits study."""
    from .study import StudyConfig

    return StudyConfig(
        vaes=zoo["specs"],
        names=zoo["names"],
        out_dir=settings.out,
        train_data="digits",
        eval_data="digits",
        image_size=8,
        max_train=None,
        num_eval=None,
        num_reference=1400,
        num_samples=settings.num_samples,
        t_grid=list(settings.t_grid),
        feature="digits",
        interpolation="slerp",
        alpha=0.5,
        k=1,
        probe={
            **settings.probe_recipe(),
            "checkpoint_every": max(1, settings.probe_steps // 4),
        },
        probe_seeds=settings.probe_seeds,
        sampler=settings.sampler,
        sampling_steps=settings.sampling_steps,
        ifid_ablation=[dict(a) for a in settings.ablation],
        groups=zoo["groups"],
        batch_size=settings.batch_size,
        sample_batch_size=max(2, min(settings.num_samples, 500)),
        seed=settings.seed,
    )


def run_digits_study(
    settings: DigitsStudySettings,
    *,
    feature: nn.Module | None = None,
    progress: bool = True,
    log: Any = print,
    shard: Any = None,
    board: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Build the zoo, run (or resume) the study and write ``<out>/report``.

    ``feature`` replaces the digit classifier (tests); the report records the classifier's
    accuracy and FID floors under ``feature_network``. ``shard`` (a
    :class:`~ifid_callback.probes.shard.Shard`; default from torchrun's environment, else one
    shard) and ``board`` split the VAEs' training, the VAEs and their probes over processes as
    :func:`~ifid_callback.probes.study.run_study` does; a shard that finishes while others still
    work returns None.
    """
    from .digit_features import digit_features
    from .study import run_study

    settings.validate()
    started = time.time()
    feat = feature if feature is not None else digit_features()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "digits_settings.json", dataclasses.asdict(settings))
    zoo_jobs, needs = digits_zoo_jobs(settings, lambda: feat, progress)
    config = digits_study_config(settings, digits_zoo_plan(settings))

    def extend(result: dict[str, Any]) -> None:
        zoo = build_digits_zoo(settings, feat, progress=progress)  # every member is done
        if log:
            log(f"zoo: {len(zoo['names'])} VAEs ready [{time.time() - started:.0f}s]")
        result["feature_network"] = dict(getattr(feat, "info", {}) or {})
        result["digits_settings"] = dataclasses.asdict(settings)
        result["zoo"] = zoo["members"]

    result = run_study(
        config,
        feature=feat,
        progress=progress,
        log=log,
        shard=shard,
        prior_jobs=zoo_jobs,
        needs=needs,
        board=board,
        extend=extend,
    )
    if result is not None:
        result["seconds"] = time.time() - started
    return result
