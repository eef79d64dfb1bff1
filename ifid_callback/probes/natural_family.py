"""The natural family: 48 digit VAEs at equal latent size, built to decide iFID against rFID.

Three latent shapes with 64 values each (1x8x8, 4x4x4, 16x2x2: a TinyVAE with 0, 1 and 2
downsamplings of the 8x8 digits) crossed with the 16 recipes of :data:`NATURAL_RECIPES`, one VAE
seed each. Probes see 4 tokens of 16 values whatever the shape (patch 4, 2 and 1). One probe seed
per VAE, a second for a seeded random third. The design, its primary endpoint and its power are
in ``docs/results/natural_family/DESIGN.md``; the alignment target is a frozen random
convolutional network (:class:`~ifid_callback.probes.recipe_losses.RandomConvTeacher`), not the
digit classifier that measures FID.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .zoo import ZooMember

__all__ = [
    "NATURAL_RECIPES",
    "NATURAL_SHAPES",
    "NaturalFamilySettings",
    "build_natural_family",
    "natural_members",
    "natural_study_config",
    "publish_natural_family",
    "run_control",
    "run_natural_family",
    "second_seed_names",
]

#: shape label -> (latent channels, downsamplings of an 8x8 image, probe patch size).
NATURAL_SHAPES: dict[str, tuple[int, int, int]] = {
    "1x8x8": (1, 0, 4),
    "4x4x4": (4, 1, 2),
    "16x2x2": (16, 2, 1),
}

#: The 16 recipes (channels and downsamplings are filled in per shape).
NATURAL_RECIPES: tuple[ZooMember, ...] = (
    ZooMember("ae"),
    ZooMember("kl1e-4", kl_weight=1e-4),
    ZooMember("kl1e-3", kl_weight=1e-3),
    ZooMember("kl1e-2", kl_weight=1e-2),
    ZooMember("kl1e-1", kl_weight=1e-1),
    ZooMember("kl3e-1", kl_weight=3e-1),
    ZooMember("noise0.1", latent_noise=0.1),
    ZooMember("noise0.5", latent_noise=0.5),
    ZooMember("noise1.5", latent_noise=1.5),
    ZooMember("align0.01", kl_weight=1e-3, align_weight=0.01),
    ZooMember("align0.1", kl_weight=1e-3, align_weight=0.1),
    ZooMember("align1", kl_weight=1e-3, align_weight=1.0),
    ZooMember("eq1", equivariance_weight=1.0),
    ZooMember("spectral0.01", spectral_weight=0.01),
    ZooMember("spectral0.1", spectral_weight=0.1),
    ZooMember("under0.1", steps_fraction=0.1),
)


def natural_members(
    shapes: tuple[str, ...] = tuple(NATURAL_SHAPES),
    recipes: tuple[ZooMember, ...] = NATURAL_RECIPES,
) -> list[ZooMember]:
    """Every (shape, recipe) member, named ``<recipe>-<shape>`` (e.g. ``kl1e-3-4x4x4``)."""
    out = []
    for shape in shapes:
        if shape not in NATURAL_SHAPES:
            raise ValueError(f"unknown shape {shape!r}; known: {list(NATURAL_SHAPES)}")
        channels, downsamples, _ = NATURAL_SHAPES[shape]
        for recipe in recipes:
            out.append(
                replace(
                    recipe,
                    name=f"{recipe.name}-{shape}",
                    latent_channels=channels,
                    downsamples=downsamples,
                )
            )
    return out


def second_seed_names(names: list[str], fraction: float, seed: int) -> list[str]:
    """The seeded random ``round(fraction * len(names))`` names that get a second probe seed."""
    rng = np.random.default_rng([seed, 20_261_124])
    chosen = rng.permutation(len(names))[: int(round(fraction * len(names)))]
    return [names[i] for i in sorted(chosen)]


@dataclass
class NaturalFamilySettings:
    """Budget and recipe of the natural family (see ``DESIGN.md`` for the fixed values).

    Attributes:
        out: study directory (``zoo/``, the cached stages, ``report/``).
        shapes, recipes: which shapes and recipe names to build (default: all 3 x 16).
        vae_steps, vae_batch_size, vae_lr, base_channels: VAE training (as the digits study).
        probe_steps, probe_batch_size, probe_lr, probe_ema, probe_overrides: the SiT probe.
        second_seed_fraction: VAEs (a seeded random subset) that get a second probe seed.
        num_samples, sampling_steps, sampler, t_grid: gFID and gFID(t) sampling.
        teacher_width, teacher_seed: the random convolutional alignment target.
        batch_size: images per encode/decode/feature batch.
        seed: seeds the VAEs, the probes, the sampling and the second-seed draw.
        control: run the positive-control pair check (``DESIGN.md`` section 3) before the
            analysis; the analysis is written only if the control holds.
        control_overrides: fields of the control's
            :class:`~ifid_callback.probes.digits_study.DigitsStudySettings` (default: the digits
            study's recipe; the smoke run shrinks it).
        analyse_if_control_fails: analyse even when the control fails, with a warning in the
            report (smoke runs only: their tiny control is noise).
        num_resamples: bootstrap resamples of every interval (pre-registered: 10,000, seed 0).
        miss_places: a VAE whose gFID and iFID ranks differ by more is listed as a miss.
    """

    out: str
    shapes: list[str] = field(default_factory=lambda: list(NATURAL_SHAPES))
    recipes: list[str] = field(default_factory=lambda: [r.name for r in NATURAL_RECIPES])
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
    second_seed_fraction: float = 1.0 / 3.0
    num_samples: int = 10_000
    sampling_steps: int = 25
    sampler: str = "euler"
    t_grid: list[float] = field(default_factory=lambda: [0.3, 0.6])
    teacher_width: int = 16
    teacher_seed: int = 1234
    batch_size: int = 256
    seed: int = 0
    control: bool = True
    control_overrides: dict[str, Any] = field(default_factory=dict)
    analyse_if_control_fails: bool = False
    num_resamples: int = 10_000
    miss_places: int = 12

    def __post_init__(self) -> None:
        known = {r.name for r in NATURAL_RECIPES}
        unknown = sorted(set(self.recipes) - known)
        if unknown:
            raise ValueError(f"unknown recipes {unknown}; known: {sorted(known)}")
        natural_members(tuple(self.shapes))  # names a bad shape
        if not 0.0 <= self.second_seed_fraction <= 1.0:
            raise ValueError(
                f"second_seed_fraction must be in [0, 1], got {self.second_seed_fraction!r}"
            )

    def members(self) -> list[ZooMember]:
        recipes = tuple(r for r in NATURAL_RECIPES if r.name in self.recipes)
        return natural_members(tuple(self.shapes), recipes)

    @classmethod
    def smoke(cls, out: str) -> NaturalFamilySettings:
        """Tiny settings that run the whole pipeline in well under a minute (numbers
        meaningless): three of the new recipes at all three shapes, a tiny control pair, the
        analysis with 200 resamples whatever the control says."""
        tiny_probe = {"depth": 1, "hidden_size": 32, "num_heads": 2}
        return cls(
            out=out,
            recipes=["align0.1", "eq1", "spectral0.1"],
            vae_steps=10,
            base_channels=8,
            probe_steps=4,
            probe_overrides=tiny_probe,
            num_samples=32,
            sampling_steps=2,
            t_grid=[0.5],
            control_overrides={
                "vae_steps": 10,
                "base_channels": 8,
                "probe_steps": 4,
                "probe_overrides": tiny_probe,
                "num_samples": 32,
                "sampling_steps": 2,
            },
            analyse_if_control_fails=True,
            num_resamples=200,
            miss_places=1,
        )

    def design_differences(self) -> dict[str, dict[str, Any]]:
        """Settings that differ from the pre-registered ones (``out`` aside):
        ``{field: {"design", "run"}}``; empty for the design's run."""
        design = dataclasses.asdict(NaturalFamilySettings(out=self.out))
        run = dataclasses.asdict(self)
        return {k: {"design": design[k], "run": run[k]} for k in design if design[k] != run[k]}


def _train_member(
    member: ZooMember, settings: NaturalFamilySettings, zoo_dir: Path, progress: bool
) -> Path | str:
    """The member's checkpoint, or why it was dropped (its training diverged: a non-finite
    loss), remembered in ``<name>.diverged.json`` so a resumed run does not retrain it."""
    marker = zoo_dir / f"{member.name}.diverged.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("settings") == _member_key(member, settings):
            return str(saved["reason"])
    try:
        return _train_member_checkpoint(member, settings, zoo_dir, progress)
    except FloatingPointError as err:
        reason = f"training diverged ({err})"
        marker.write_text(
            json.dumps({"settings": _member_key(member, settings), "reason": reason}, indent=2)
        )
        return reason


def _member_key(member: ZooMember, settings: NaturalFamilySettings) -> dict[str, Any]:
    keep = ("vae_steps", "vae_batch_size", "vae_lr", "base_channels", "seed", "teacher_width")
    run = dataclasses.asdict(settings)
    return {
        "member": member.to_dict(),
        **{k: run[k] for k in keep},
        "teacher": settings.teacher_seed,
    }


def _train_member_checkpoint(
    member: ZooMember, settings: NaturalFamilySettings, zoo_dir: Path, progress: bool
) -> Path:
    from ..data import EmbeddedDigits
    from .recipe_losses import RandomConvTeacher
    from .zoo import train_zoo_member

    teacher = None
    if member.align_weight > 0:
        side = 8 // 2 ** int(member.downsamples or 0)
        teacher = RandomConvTeacher(1, side, settings.teacher_width, settings.teacher_seed)
    return train_zoo_member(
        member,
        EmbeddedDigits("train").as_tensor(),
        zoo_dir / f"{member.name}.ckpt",
        steps=settings.vae_steps,
        batch_size=settings.vae_batch_size,
        lr=settings.vae_lr,
        base_channels=settings.base_channels,
        seed=settings.seed,
        progress=progress,
        teacher=teacher,
        teacher_name=teacher.name if teacher is not None else None,
    )


def _train_all(settings: NaturalFamilySettings, zoo_dir: Path, progress: bool, shard: Any) -> None:
    """Train the members as jobs of :mod:`~ifid_callback.probes.shard`: this shard's first,
    then every other one (waiting for those another process is training), so every shard
    leaves with the whole family and the study after it sees the same members everywhere."""
    from .shard import Job, JobBoard, config_digest, run_jobs

    jobs = [
        Job(
            f"vae-{m.name}",
            lambda m=m: _train_member(m, settings, zoo_dir, progress),
            key=_member_key(m, settings),
        )
        for m in settings.members()
    ]
    folder = zoo_dir / "jobs" / config_digest([(j.name, j.key) for j in jobs])
    run_jobs(jobs, JobBoard(folder, shard), wait_for_all=True)


def build_natural_family(
    settings: NaturalFamilySettings, progress: bool = True, shard: Any = None
) -> dict[str, Any]:
    """Train (or find) every member; ``zoo/zoo.json`` lists them. Returns ``{"specs", "names",
    "groups": {shape: names, "natural": all}, "members": {name: recipe}, "dropped": {name:
    reason}}``: a member whose training diverged is dropped (``DESIGN.md``: the only reason).

    ``shard`` (:class:`~ifid_callback.probes.shard.Shard`, default one process) splits the
    training over processes that share ``settings.out``."""
    from .shard import Shard

    zoo_dir = Path(settings.out) / "zoo"
    zoo_dir.mkdir(parents=True, exist_ok=True)
    _train_all(settings, zoo_dir, progress, shard if shard is not None else Shard())
    specs, names, members, dropped = [], [], {}, {}
    groups: dict[str, list[str]] = {shape: [] for shape in settings.shapes}
    for member in settings.members():
        trained = _train_member(member, settings, zoo_dir, progress)
        if isinstance(trained, str):
            dropped[member.name] = trained
            continue
        specs.append(str(trained))
        names.append(member.name)
        members[member.name] = member.to_dict()
        groups[member.name.rsplit("-", 1)[1]].append(member.name)
    groups["natural"] = list(names)
    listing = {"names": names, "checkpoints": [Path(s).name for s in specs], "members": members}
    (zoo_dir / "zoo.json").write_text(
        json.dumps({**listing, "groups": groups, "dropped": dropped}, indent=2)
    )
    return {
        "specs": specs,
        "names": names,
        "groups": groups,
        "members": members,
        "dropped": dropped,
    }


def natural_study_config(settings: NaturalFamilySettings, zoo: dict[str, Any]) -> Any:
    """The :class:`~ifid_callback.probes.study_config.StudyConfig` of the natural family: the
    digits, the digit classifier's FID, 4 probe tokens per VAE, a second seed for a third."""
    from .study_config import StudyConfig

    names = list(zoo["names"])
    patch = {name: NATURAL_SHAPES[name.rsplit("-", 1)[1]][2] for name in names}
    second = second_seed_names(names, settings.second_seed_fraction, settings.seed)
    return StudyConfig(
        vaes=list(zoo["specs"]),
        names=names,
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
        probe={
            "size": "tiny",
            "steps": settings.probe_steps,
            "batch_size": settings.probe_batch_size,
            "lr": settings.probe_lr,
            "ema_decay": settings.probe_ema,
            "model_overrides": dict(settings.probe_overrides),
            "time_shift": None,
            "checkpoint_every": max(1, settings.probe_steps // 4),
        },
        probe_seeds=1,
        probe_by_vae={name: {"patch_size": p} for name, p in patch.items()},
        probe_seeds_by_vae={name: 2 for name in second},
        sampler=settings.sampler,
        sampling_steps=settings.sampling_steps,
        groups=zoo["groups"],
        batch_size=settings.batch_size,
        sample_batch_size=max(2, min(settings.num_samples, 500)),
        seed=settings.seed,
    )


def run_control(settings: NaturalFamilySettings, feature: Any, log: Any = None) -> dict[str, Any]:
    """The pipeline check of ``DESIGN.md`` section 3: the digits study's positive-control pair
    (``ae`` vs ``ae-shuffle-b2``, 4x4x4, the digits study's recipe with
    ``settings.control_overrides``) at ``settings.seed``, cached under ``<out>/control``. It
    holds when iFID and gFID both prefer ``ae``.

    Returns ``{"vaes", "seed", "rfid", "ifid", "gfid" (pairs), "ifid_prefers", "gfid_prefers",
    "holds", "recipe"}``.
    """
    from .digits_study import DigitsStudySettings
    from .pair import CONTROL, PAIRS, run_pair

    recipe = DigitsStudySettings(
        out=str(Path(settings.out) / "control"), seed=settings.seed, **settings.control_overrides
    )
    run = run_pair(CONTROL, settings.seed, recipe, feature=feature, workers=1, log=log)
    a, b = run["vaes"]
    verdict = run["verdict"]
    expected = PAIRS[CONTROL][0]
    return {
        "vaes": list(PAIRS[CONTROL]),
        "seed": settings.seed,
        **{key: [a[key], b[key]] for key in ("rfid", "ifid", "gfid")},
        "ifid_prefers": verdict["ifid_prefers"],
        "gfid_prefers": verdict["gfid_prefers"],
        "holds": verdict["ifid_prefers"] == expected and verdict["gfid_prefers"] == expected,
        "recipe": {k: v for k, v in dataclasses.asdict(recipe).items() if k != "ablation"},
    }


def run_natural_family(
    settings: NaturalFamilySettings,
    *,
    feature: Any = None,
    progress: bool = True,
    log: Any = print,
    shard: Any = None,
) -> dict[str, Any] | None:
    """Build the family, run (or resume) the study, the companions, the control check and the
    pre-registered analysis; write ``<out>/report`` (the study's per-VAE report) and
    ``<out>/analysis`` (``results.json``, ``results.md``, ``vaes.csv``: what
    :func:`publish_natural_family` copies into ``docs/results/natural_family``).

    ``feature`` replaces the digit classifier (tests). Every stage is cached, so an interrupted
    run resumes. ``shard`` (default: from torchrun's environment, else one process; ``--shard
    i/n`` on the command line) splits the VAEs, probes and sampling over processes sharing
    ``settings.out``; the last to finish writes the study, the companions, the control and the
    analysis. Returns the study's result with ``"zoo"``, ``"dropped"``, ``"control"``,
    ``"analysis"`` (None when the control failed) and ``"analysis_paths"``; None in a shard
    that finished while others still work.
    """
    from .digit_features import digit_features
    from .natural_analysis import analyse_natural_family, natural_table, write_natural_report
    from .natural_companions import companion_predictors
    from .shard import resolve_shard
    from .study import run_study

    feat = feature if feature is not None else digit_features()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "natural_settings.json").write_text(
        json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True)
    )
    say = log or (lambda _msg: None)
    shard = shard if shard is not None else resolve_shard()
    zoo = build_natural_family(settings, progress=progress, shard=shard)
    say(f"natural family: {len(zoo['names'])} VAEs ready, {len(zoo['dropped'])} dropped")
    config = natural_study_config(settings, zoo)
    result = run_study(config, feature=feat, progress=progress, report=True, log=log, shard=shard)
    if result is None:
        return None
    result["zoo"] = zoo["members"]
    result["dropped"] = zoo["dropped"]
    companions = {}
    for spec, row in zip(config.vaes, result["vaes"], strict=True):
        companions[row["name"]] = companion_predictors(
            config, spec, row["name"], feat, len(row["gfid_seeds"]), progress=progress
        )
    control = run_control(settings, feat, log=log) if settings.control else None
    if control is not None:
        say(f"control pair: {'holds' if control['holds'] else 'FAILS'}")
    table = natural_table(result["vaes"], zoo["members"], companions)
    analyse = control is None or control["holds"] or settings.analyse_if_control_fails
    analysis = None
    if analyse:
        analysis = analyse_natural_family(
            table,
            num_resamples=settings.num_resamples,
            seed=0,
            miss_places=settings.miss_places,
        )
        say(f"primary: {analysis['decision']}")
    payload = {
        "settings": dataclasses.asdict(settings),
        "design_differences": settings.design_differences(),
        "num_samples": settings.num_samples,
        "dropped": zoo["dropped"],
        "control": control,
        "analysis": analysis,
        "table": table,
    }
    paths = write_natural_report(out / "analysis", payload)
    result.update(control=control, analysis=analysis)
    result["analysis_paths"] = {k: str(v) for k, v in paths.items()}
    return result


#: Where the committed report of the real run goes (next to ``DESIGN.md``).
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results" / "natural_family"


def publish_natural_family(
    out: str | Path, dest: str | Path = DOCS_DIR, *, allow_nondesign: bool = False
) -> list[Path]:
    """Copy a finished run's report into ``dest`` (default ``docs/results/natural_family``):
    ``results.md`` as ``README.md``, ``results.json``, ``vaes.csv``; ``DESIGN.md`` is never
    touched. Refuses a run whose settings differ from the design (a smoke run) unless
    ``allow_nondesign`` (the report lists the differences at its top)."""
    src = Path(out) / "analysis"
    payload_file = src / "results.json"
    if not payload_file.is_file():
        raise FileNotFoundError(
            f"no {payload_file}: run run_natural_family(out={str(out)!r}) first"
        )
    payload = json.loads(payload_file.read_text())
    if payload.get("design_differences") and not allow_nondesign:
        raise ValueError(
            f"the run in {out} differs from the design in {sorted(payload['design_differences'])}; "
            "publish it only with allow_nondesign=True (--allow-nondesign) and give the reasons "
            "in its report"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copies = {"results.md": "README.md", "results.json": "results.json", "vaes.csv": "vaes.csv"}
    written = []
    for name, target in copies.items():
        path = dest / target
        path.write_bytes((src / name).read_bytes())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m ifid_callback.probes.natural_family run --out runs/natural [--publish]``
    runs (or resumes) the pre-registered study; ``publish --out runs/natural`` copies its report
    into ``docs/results/natural_family``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ifid_callback.probes.natural_family")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume the natural family (DESIGN.md settings)")
    run.add_argument("--out", default="runs/natural")
    run.add_argument("--smoke", action="store_true", help="tiny settings (numbers meaningless)")
    run.add_argument("--publish", action="store_true", help="then copy the report into docs/")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--shard",
        default=None,
        help="i/n: this process's share of the jobs (processes share --out); 'slurm' for a "
        "SLURM array task; torchrun ranks split it further",
    )
    pub = sub.add_parser("publish", help="copy a finished run's report into docs/")
    pub.add_argument("--out", default="runs/natural")
    pub.add_argument("--dest", default=str(DOCS_DIR))
    pub.add_argument("--allow-nondesign", action="store_true")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2


def _main(args: Any) -> int:
    if args.command == "run":
        settings = (
            NaturalFamilySettings.smoke(args.out) if args.smoke else NaturalFamilySettings(args.out)
        )
        from .shard import resolve_shard

        result = run_natural_family(
            settings, progress=not args.no_progress, shard=resolve_shard(args.shard)
        )
        if result is None:
            print("this shard is done; the last one to finish writes the report")
            return 0
        print(f"report: {Path(args.out) / 'analysis' / 'results.md'}")
        if args.publish:
            for path in publish_natural_family(args.out):
                print(f"wrote {path}")
        return 0
    for path in publish_natural_family(args.out, args.dest, allow_nondesign=args.allow_nondesign):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
