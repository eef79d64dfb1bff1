"""``ifid-probe``: train the VAE zoo, run the gFID study, rebuild its report.

    ifid-probe zoo --out runs/zoo
    ifid-probe run --zoo runs/zoo --out runs/study --feature inception-bf16
    ifid-probe run --vae a.ckpt --vae stabilityai/sd-vae-ft-mse --train-data /data/train \\
        --eval-data /data/val --image-size 256 --device cuda --probe-size B --probe-steps 400000
    ifid-probe study --dataset digits --out runs/digits
    ifid-probe pair-check --seeds 0 1 2 3 4 --out runs/pair-check --report docs/results/digits/pair
    ifid-probe report --study runs/study --out docs/results

``run``, ``study`` and ``pair-check`` split their jobs over the ranks of ``torchrun
--nproc_per_node N`` and over the tasks of a SLURM array (``--shard slurm`` or ``--shard i/n``);
see :mod:`ifid_callback.probes.shard`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _time_shift(text: str) -> float | str | None:
    """``--time-shift``: a number > 0, ``auto`` (sqrt(C*H*W / 4096)) or ``none`` (uniform t)."""
    low = text.strip().lower()
    if low == "none":
        return None
    if low == "auto":
        return "auto"
    try:
        value = float(low)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--time-shift must be a number > 0, 'auto' or 'none', got {text!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--time-shift must be a number > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="do shard I of N of the jobs (from 0), or 'slurm': this task of the SLURM job "
        "array; under torchrun every rank is a shard too. Shards share --out; the one that "
        "finishes last writes the report",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifid-probe",
        description="Offline SiT probes: measure gFID for several VAEs and correlate it with "
        "rFID and iFID.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="train the small-VAE zoo on the embedded photo patches")
    zoo.add_argument("--out", required=True, help="directory for <member>.ckpt and zoo.json")
    zoo.add_argument(
        "--members", default=None, help="comma-separated member names (default: all of DEFAULT_ZOO)"
    )
    zoo.add_argument("--steps", type=int, default=1500, help="optimiser steps per VAE")
    zoo.add_argument("--batch-size", type=int, default=64)
    zoo.add_argument("--lr", type=float, default=2e-3)
    zoo.add_argument("--base-channels", type=int, default=32)
    zoo.add_argument("--image-size", type=int, default=32)
    zoo.add_argument("--device", default="cpu")
    zoo.add_argument("--seed", type=int, default=0)
    zoo.add_argument("--no-progress", action="store_true")

    run = sub.add_parser("run", help="run (or resume) the study and write its report")
    run.add_argument(
        "--vae",
        action="append",
        default=[],
        help="a VAE: .ckpt (TinyVAE, demo or zoo), diffusers dir or hub id, or "
        "package.module:factory; repeat for several",
    )
    run.add_argument("--zoo", default=None, help="add every .ckpt of a zoo directory")
    run.add_argument("--out", required=True, help="study directory (cache + report)")
    run.add_argument(
        "--train-data",
        default="embedded",
        help="'embedded' or an image folder (probe training, gFID reference)",
    )
    run.add_argument(
        "--eval-data", default="embedded", help="'embedded' or an image folder of held-out images"
    )
    run.add_argument("--image-size", type=int, default=32)
    run.add_argument("--max-train", type=int, default=None)
    run.add_argument("--num-eval", type=int, default=1000)
    run.add_argument("--num-reference", type=int, default=2000)
    run.add_argument("--num-samples", type=int, default=50000)  # StudyConfig's default
    run.add_argument(
        "--t-grid",
        type=_floats,
        default=[0.2, 0.4, 0.6, 0.8],
        help="comma-separated gFID(t) noise levels in (0, 1)",
    )
    run.add_argument(
        "--feature",
        default="inception",
        help="'inception', 'inception-bf16' or package.module:factory",
    )
    run.add_argument("--interpolation", default="slerp")
    run.add_argument("--alpha", type=float, default=0.5)
    run.add_argument("--k", type=int, default=1)
    run.add_argument("--probe-size", default="tiny")
    run.add_argument("--patch-size", type=int, default=2)
    run.add_argument("--probe-steps", type=int, default=2000)
    run.add_argument("--probe-batch-size", type=int, default=128)
    run.add_argument("--probe-lr", type=float, default=1e-4)
    run.add_argument("--probe-ema", type=float, default=0.9999)
    run.add_argument(
        "--time-shift",
        type=_time_shift,
        default=None,
        help="probe time shift s (training times and sampler grid): a number > 0, 'auto' "
        "(sqrt(C*H*W / 4096), made for 32x32x4 latents) or 'none' (uniform t; the default)",
    )
    run.add_argument(
        "--probe-seeds",
        type=_positive_int,
        default=2,
        help="probes per VAE (seeds seed, seed+1, ...); gFID is reported per seed and as the mean",
    )
    run.add_argument(
        "--probe-overrides",
        default="{}",
        help="JSON dict of SiTConfig fields, e.g. '{\"depth\": 2}'",
    )
    run.add_argument("--sampler", default="euler", choices=("euler", "heun", "sde"))
    run.add_argument("--sampling-steps", type=int, default=50)
    run.add_argument(
        "--device", default="cpu", help="'cpu', 'cuda' (under torchrun: cuda:LOCAL_RANK), ..."
    )
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--sample-batch-size", type=int, default=256)
    run.add_argument("--num-workers", type=int, default=0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--stats-cache",
        default=None,
        metavar="DIR",
        help="also cache the real images' features here, shared by studies on the same images "
        "and feature network ('default': $IFID_STATS_CACHE or ~/.cache/ifid_callback/stats)",
    )
    _add_shard(run)

    st = sub.add_parser(
        "study",
        help="build a dataset's zoo (natural family, positive control, channel sweep) and run "
        "the study on it, resumably",
    )
    st.add_argument("--dataset", required=True, choices=("digits",))
    st.add_argument("--out", required=True, help="study directory (zoo, cache, report)")
    st.add_argument(
        "--smoke", action="store_true", help="tiny settings: the pipeline end to end in a minute"
    )
    st.add_argument(
        "--families", default=None, help="zoo families to build, e.g. 'AB' (default ABC)"
    )
    st.add_argument("--vae-steps", type=_positive_int, default=None)
    st.add_argument("--probe-steps", type=_positive_int, default=None)
    st.add_argument("--probe-seeds", type=_positive_int, default=None)
    st.add_argument("--probe-overrides", default=None, help="JSON dict of SiTConfig fields")
    st.add_argument("--time-shift", type=_time_shift, default=None)
    st.add_argument("--num-samples", type=_positive_int, default=None)
    st.add_argument("--sampling-steps", type=_positive_int, default=None)
    st.add_argument("--seed", type=int, default=None)
    st.add_argument("--no-progress", action="store_true")
    _add_shard(st)

    pc = sub.add_parser(
        "pair-check",
        help="train the demo's candidate VAE pairs and their probes at several seeds and apply "
        "the criterion that picks the pair `ifid demo` shows",
    )
    pc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    pc.add_argument("--out", required=True, help="working directory (VAEs, cached results)")
    pc.add_argument("--report", default=None, help="where to write results.md/json (default --out)")
    pc.add_argument(
        "--pairs", default=None, help="comma-separated pair names (default: candidates + control)"
    )
    pc.add_argument(
        "--workers", type=_positive_int, default=2, help="processes (one shard: see --shard)"
    )
    pc.add_argument("--smoke", action="store_true", help="tiny settings; numbers mean nothing")
    _add_shard(pc)

    rep = sub.add_parser("report", help="rebuild the report of a finished (or partial) study")
    rep.add_argument("--study", required=True, help="the study directory")
    rep.add_argument("--out", default=None, help="report directory (default <study>/report)")
    return parser


def _zoo(args: argparse.Namespace) -> int:
    from ..data import EmbeddedPatches
    from .zoo import DEFAULT_ZOO, train_zoo

    members = DEFAULT_ZOO
    if args.members:
        wanted = [m.strip() for m in args.members.split(",") if m.strip()]
        known = {m.name: m for m in DEFAULT_ZOO}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            print(f"unknown zoo members {unknown}; known: {sorted(known)}", file=sys.stderr)
            return 2
        members = tuple(known[w] for w in wanted)
    images = EmbeddedPatches("train", size=args.image_size).as_tensor()
    paths = train_zoo(
        args.out,
        images,
        members,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        base_channels=args.base_channels,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    for p in paths:
        print(p)
    return 0


def _shard_done(result: object, shard: object) -> bool:
    """Print the line of a shard that finished before the others; True when it did."""
    if result is None:
        print(f"shard {shard}: its jobs are done; the shard that finishes last writes the report")
        return True
    return False


def _run(args: argparse.Namespace) -> int:
    from .shard import resolve_shard, use_device
    from .study import StudyConfig, run_study

    vaes = list(args.vae)
    if args.zoo:
        zoo_dir = Path(args.zoo)
        listing = zoo_dir / "zoo.json"
        if listing.is_file():
            vaes += [str(zoo_dir / n) for n in json.loads(listing.read_text())["checkpoints"]]
        else:
            vaes += sorted(str(p) for p in zoo_dir.glob("*.ckpt"))
    if not vaes:
        print("give at least one --vae or a --zoo directory", file=sys.stderr)
        return 2
    try:
        overrides = json.loads(args.probe_overrides)
    except json.JSONDecodeError as exc:
        print(f"--probe-overrides is not JSON: {exc}", file=sys.stderr)
        return 2
    shard = resolve_shard(args.shard)
    config = StudyConfig(
        vaes=vaes,
        out_dir=args.out,
        train_data=args.train_data,
        eval_data=args.eval_data,
        image_size=args.image_size,
        max_train=args.max_train,
        num_eval=args.num_eval,
        num_reference=args.num_reference,
        num_samples=args.num_samples,
        t_grid=args.t_grid,
        feature=args.feature,
        interpolation=args.interpolation,
        alpha=args.alpha,
        k=args.k,
        probe={
            "size": args.probe_size,
            "patch_size": args.patch_size,
            "steps": args.probe_steps,
            "batch_size": args.probe_batch_size,
            "lr": args.probe_lr,
            "ema_decay": args.probe_ema,
            "model_overrides": overrides,
            "time_shift": args.time_shift,
        },
        probe_seeds=args.probe_seeds,
        sampler=args.sampler,
        sampling_steps=args.sampling_steps,
        device=use_device(args.device, shard),
        batch_size=args.batch_size,
        sample_batch_size=args.sample_batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
    )
    cache = True if args.stats_cache == "default" else args.stats_cache
    result = run_study(config, progress=not args.no_progress, stats_cache=cache, shard=shard)
    if _shard_done(result, shard):
        return 0
    assert result is not None
    if result["report"]:
        print(Path(result["report"]["markdown"]).read_text())
    return 0


def _study(args: argparse.Namespace) -> int:
    from .digits_study import DigitsStudySettings, run_digits_study
    from .shard import resolve_shard

    settings = DigitsStudySettings.smoke(args.out) if args.smoke else DigitsStudySettings(args.out)
    if args.probe_overrides is not None:
        try:
            settings.probe_overrides = json.loads(args.probe_overrides)
        except json.JSONDecodeError as exc:
            print(f"--probe-overrides is not JSON: {exc}", file=sys.stderr)
            return 2
    for name in (
        "families",
        "vae_steps",
        "probe_steps",
        "probe_seeds",
        "num_samples",
        "sampling_steps",
        "seed",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    # --time-shift's default (None) is also the study's: uniform t.
    settings.time_shift = args.time_shift
    shard = resolve_shard(args.shard)
    result = run_digits_study(settings, progress=not args.no_progress, shard=shard)
    if _shard_done(result, shard):
        return 0
    assert result is not None
    print(Path(result["report"]["markdown"]).read_text())
    return 0


def _pair_check(args: argparse.Namespace) -> int:
    from .digits_study import DigitsStudySettings
    from .pair import CANDIDATES, CONTROL, PAIRS, check_pairs, format_check, write_check
    from .shard import resolve_shard

    settings = DigitsStudySettings.smoke(args.out) if args.smoke else DigitsStudySettings(args.out)
    pairs = (*CANDIDATES, CONTROL)
    if args.pairs:
        pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip())
        unknown = [p for p in pairs if p not in PAIRS]
        if unknown:
            print(f"unknown pairs {unknown}; known: {sorted(PAIRS)}", file=sys.stderr)
            return 2
    shard = resolve_shard(args.shard)
    check = check_pairs(args.seeds, settings, pairs=pairs, workers=args.workers, shard=shard)
    if _shard_done(check, shard):
        return 0
    assert check is not None
    write_check(check, args.report or args.out)
    print(format_check(check))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    study = Path(args.study)
    raw = study / "results_raw.json"
    if not raw.is_file():
        print(f"{raw} not found: run `ifid-probe run` first", file=sys.stderr)
        return 2
    result = json.loads(raw.read_text())
    paths = write_report(result, args.out or study / "report")
    print(paths["markdown"].read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ifid-probe``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "run":
            return _run(args)
        if args.command == "study":
            return _study(args)
        if args.command == "pair-check":
            return _pair_check(args)
        return _report(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"ifid-probe {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
