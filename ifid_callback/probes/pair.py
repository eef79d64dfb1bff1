"""Two VAEs that rFID and iFID rank oppositely, and a diffusion probe that settles which is right.

A pair is two members of the digits zoo (:mod:`ifid_callback.probes.digits_study`), trained with
the study's recipe. For one seed, :func:`measure_member` trains a VAE, measures its rFID and iFID
with :class:`~ifid_callback.InterpolatedFID` (on the 397 held-out digits, neighbours among the
1400 training latents, with standard errors) and trains a SiT probe on its latents, whose
samples give gFID. :func:`verdict` says which metric the probe sided with.
:func:`check_pairs` repeats this over several seeds for the candidate pairs, the check behind
the pair that ``ifid demo`` shows (``docs/results/digits/pair/``).

Seed ``s`` seeds everything random: the VAE's initialisation, batches and posterior draws, the
probe's initialisation, batches, noise and times, and the sampling noise. The digits' split and
the digit classifier (the measuring instrument) are fixed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .digits_study import DigitsStudySettings
from .pair_report import demo_summary, format_check, format_pair, outcome_sentence, write_check
from .pair_verdict import CANDIDATES, CONTROL, DESCRIPTIONS, PAIRS, holds, summarize_check, verdict

__all__ = [
    "CANDIDATES",
    "CONTROL",
    "DESCRIPTIONS",
    "PAIRS",
    "check_pairs",
    "demo_summary",
    "format_check",
    "format_pair",
    "measure_member",
    "outcome_sentence",
    "run_pair",
    "holds",
    "summarize_check",
    "verdict",
    "write_check",
]


def _recipe_key(settings: DigitsStudySettings) -> dict[str, Any]:
    keep = (
        "vae_steps", "vae_batch_size", "vae_lr", "base_channels", "probe_steps",
        "probe_batch_size", "probe_lr", "probe_ema", "probe_overrides", "patch_size",
        "time_shift", "num_samples", "sampling_steps", "sampler",
    )  # fmt: skip
    return {k: v for k, v in dataclasses.asdict(settings).items() if k in keep}


def _vae_path(name: str, seed: int, settings: DigitsStudySettings, feature: nn.Module) -> Path:
    """Train (or find) member ``name`` at ``seed`` under ``<out>/seed<seed>/``; wrapped members
    of the positive control are written on their trained base."""
    from .digits_study import digits_member, train_digits_vae, wrap_digits_control

    zoo_dir = Path(settings.out) / f"seed{seed}"
    member = digits_member(name)
    if member is not None:
        return train_digits_vae(member, settings, zoo_dir, feature, seed, progress=False)
    base = train_digits_vae(digits_member("ae"), settings, zoo_dir, feature, seed, progress=False)  # type: ignore[arg-type]
    return wrap_digits_control(name, base, zoo_dir)[0]


def measure_member(
    name: str, seed: int, settings: DigitsStudySettings, feature: nn.Module
) -> dict[str, Any]:
    """Train member ``name`` at ``seed`` and its probe; measure rFID, iFID, PSNR and gFID.

    Cached in ``<settings.out>/seed<seed>/<name>.json`` (keyed by the recipe), so a repeated
    call, or an interrupted check, costs nothing.

    Returns:
        ``{"vae", "seed", "rfid", "rfid_std", "ifid", "ifid_std", "psnr", "gfid", "gfid_std",
        "gfid_heldout", "gfid_heldout_std", "num_samples", "probe_loss", "seconds"}``; FIDs in
        the digit classifier's feature space; ``*_std`` are standard errors by the
        infinitesimal jackknife (rFID, iFID: over the 397 held-out queries; gFID: over the
        generated samples, reference fixed, :func:`~ifid_callback.probes.gfid_error.gfid_with_error`);
        PSNR in dB.
    """
    from ..bank import LatentBank
    from ..data import EmbeddedDigits
    from ..metric import InterpolatedFID
    from ..vae import VAEAdapter
    from .gfid import generated_features
    from .gfid_error import gfid_with_error
    from .train import ProbeTrainConfig, train_probe
    from .zoo import load_vae_checkpoint

    cache = Path(settings.out) / f"seed{seed}" / f"{name}.json"
    info = getattr(feature, "info", {}) or {}
    key = {
        "vae": name,
        "seed": seed,
        "recipe": _recipe_key(settings),
        "feature": info.get("key", type(feature).__name__),
        "format": 2,  # 2: gFID standard errors
    }
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["result"]
    started = time.time()
    vae = load_vae_checkpoint(_vae_path(name, seed, settings, feature)).eval()
    train = EmbeddedDigits("train").as_tensor()
    held_out = EmbeddedDigits("val").as_tensor()
    adapter = VAEAdapter(vae=vae)
    with torch.no_grad():
        z_train = torch.cat([adapter.encode(train[i : i + 256]) for i in range(0, len(train), 256)])
    bank = LatentBank(capacity=len(z_train))
    bank.add(z_train)
    metric = InterpolatedFID(
        vae=vae, feature=feature, bank=bank, interpolation="slerp", alpha=0.5, k=1, seed=seed
    )
    metric.update(held_out)
    scores = {k: float(v) for k, v in metric.compute().items()}

    probe_config = ProbeTrainConfig(**settings.probe_recipe(), seed=seed)
    probe = train_probe(z_train, None, probe_config, out_dir=None, progress=False)

    def decode(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return adapter.decode(z).float().clamp(-1.0, 1.0)

    samples, _ = generated_features(
        probe,
        decode,
        feature,
        settings.num_samples,
        batch_size=max(2, min(settings.num_samples, 500)),
        sampler=settings.sampler,
        steps=settings.sampling_steps,
        seed=seed + 3,  # as the digits study's first probe
    )
    with torch.no_grad():
        real_train, real_held_out = feature(train).numpy(), feature(held_out).numpy()
    gfid = gfid_with_error(samples, real_train)
    gfid_heldout = gfid_with_error(samples, real_held_out)
    tail = [v for _, v in probe.loss_history[-5:]]
    result = {
        "vae": name,
        "seed": seed,
        "rfid": scores["rfid"],
        "rfid_std": scores["rfid_std"],
        "ifid": scores["ifid"],
        "ifid_std": scores["ifid_std"],
        "psnr": scores["psnr"],
        "gfid": gfid["gfid"],
        "gfid_std": gfid["gfid_se"],
        "gfid_heldout": gfid_heldout["gfid"],
        "gfid_heldout_std": gfid_heldout["gfid_se"],
        "num_samples": gfid["num_samples"],
        "probe_loss": float(np.mean(tail)) if tail else math.nan,
        "seconds": time.time() - started,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=2))
    os.replace(tmp, cache)
    return result


def _train_job(name: str, seed: int, settings: DigitsStudySettings, feature: nn.Module) -> str:
    torch.set_num_threads(1)  # small jobs side by side on the cores; more threads only contend
    return str(_vae_path(name, seed, settings, feature))


def _measure_job(
    name: str, seed: int, settings: DigitsStudySettings, feature: nn.Module
) -> dict[str, Any]:
    torch.set_num_threads(1)
    return measure_member(name, seed, settings, feature)


def _base_of(name: str) -> str:
    from .digits_study import digits_member

    return name if digits_member(name) is not None else "ae"


def _run_jobs(
    jobs: Sequence[tuple[str, int]],
    settings: DigitsStudySettings,
    feature: nn.Module,
    workers: int,
    log: Callable[[str], Any] | None,
) -> list[dict[str, Any]]:
    """``measure_member`` for each (name, seed), in ``workers`` processes (1: in this one).

    The VAEs are trained first (each base once, so that two jobs never train the same VAE and
    a wrapped member waits only for its base's training), then every member is measured.
    """
    bases = list(dict.fromkeys((_base_of(n), s) for n, s in jobs))
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for name, seed in bases:
            _vae_path(name, seed, settings, feature)
        for name, seed in jobs:
            results.append(measure_member(name, seed, settings, feature))
            _report(results[-1], log)
        return results
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_train_job, n, s, settings, feature) for n, s in bases]:
            future.result()
        for future in [pool.submit(_measure_job, n, s, settings, feature) for n, s in jobs]:
            results.append(future.result())
            _report(results[-1], log)
    return results


def _sharded(
    jobs: Sequence[tuple[str, int]],
    settings: DigitsStudySettings,
    feature: nn.Module,
    shard: Any,
    board: dict[str, Any],
    log: Callable[[str], Any] | None,
) -> list[dict[str, Any]] | None:
    """``_run_jobs`` split over shards: ``train/<base>/<seed>`` jobs, then ``measure/<name>/
    <seed>`` (each needs its base's training); the measurements, read back from their caches,
    once every job is done."""
    from .shard import Job, JobBoard, config_digest, run_jobs

    bases = list(dict.fromkeys((_base_of(n), s) for n, s in jobs))
    board_jobs = [
        Job(f"train/{n}/{s}", partial(_vae_path, n, s, settings, feature)) for n, s in bases
    ]
    board_jobs += [
        Job(f"measure/{n}/{s}", partial(measure_member, n, s, settings, feature),
            (f"train/{_base_of(n)}/{s}",))
        for n, s in jobs
    ]  # fmt: skip
    key = [_recipe_key(settings), (getattr(feature, "info", {}) or {}).get("key")]
    folder = Path(settings.out) / "jobs" / config_digest(key, [j.name for j in board_jobs])
    done, measured = run_jobs(
        board_jobs,
        JobBoard(folder, shard, **board),
        finish=lambda: [measure_member(n, s, settings, feature) for n, s in jobs],
        log=log,
    )
    return measured if done else None


def _report(result: dict[str, Any], log: Callable[[str], Any] | None) -> None:
    if log is not None:
        log(
            f"  seed {result['seed']} {result['vae']}: rFID {result['rfid']:.2f}, "
            f"iFID {result['ifid']:.2f}, gFID {result['gfid']:.2f} [{result['seconds']:.0f}s]"
        )


def _default_feature(feature: nn.Module | None) -> nn.Module:
    if feature is not None:
        return feature
    from .digit_features import digit_features

    return digit_features()


def run_pair(
    pair: str,
    seed: int = 0,
    settings: DigitsStudySettings | None = None,
    *,
    feature: nn.Module | None = None,
    workers: int = 2,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Measure the two VAEs of ``pair`` (a key of :data:`PAIRS`) at ``seed``.

    Args:
        pair: which pair.
        seed: seeds everything random (see the module docstring).
        settings: the recipe, default the digits study's with ``out="runs/pair"``; trained
            VAEs and results are cached under ``settings.out``.
        feature: the FID feature network, default the digit classifier.
        workers: processes (the two VAEs train side by side with 2; 1 runs in this process).
        log: called with a line per measured VAE.

    Returns:
        ``{"pair", "seed", "vaes": [result of measure_member, twice], "verdict": verdict(...)}``.
    """
    if pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; known: {sorted(PAIRS)}")
    settings = settings or DigitsStudySettings(out="runs/pair")
    feature = _default_feature(feature)
    a, b = _run_jobs([(n, seed) for n in PAIRS[pair]], settings, feature, workers, log)
    return {"pair": pair, "seed": seed, "vaes": [a, b], "verdict": verdict(a, b)}


def check_pairs(
    seeds: Sequence[int],
    settings: DigitsStudySettings,
    *,
    pairs: Sequence[str] = (*CANDIDATES, CONTROL),
    feature: nn.Module | None = None,
    workers: int = 2,
    log: Callable[[str], Any] | None = print,
    shard: Any = None,
    board: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Run every pair at every seed and apply the criterion (``docs/results/digits/pair``).

    ``shard`` (a :class:`~ifid_callback.probes.shard.Shard` of more than one) splits the VAEs'
    training and the measurements over processes instead of ``workers``
    (:mod:`~ifid_callback.probes.shard`, ``board`` its options); a shard that finishes while
    others still work returns None.

    Returns ``{"seeds", "recipe", "feature_network", "pairs": {pair: {"vaes", "runs",
    "holds"}}, "shown": the first candidate that holds, else the control}``.
    """
    feature = _default_feature(feature)
    names = list(dict.fromkeys(n for p in pairs for n in PAIRS[p]))
    jobs = [(n, s) for s in seeds for n in names]
    if shard is not None and shard.count > 1:
        measured_list = _sharded(jobs, settings, feature, shard, board or {}, log)
        if measured_list is None:
            return None
    else:
        measured_list = _run_jobs(jobs, settings, feature, workers, log)
    measured = dict(zip(jobs, measured_list))
    out: dict[str, Any] = {
        "seeds": list(seeds),
        "recipe": _recipe_key(settings),
        "feature_network": dict(getattr(feature, "info", {}) or {}),
        "pairs": {},
    }
    for p in pairs:
        a, b = PAIRS[p]
        runs = [
            {"seed": s, "vaes": [measured[(a, s)], measured[(b, s)]]}
            | {"verdict": verdict(measured[(a, s)], measured[(b, s)])}
            for s in seeds
        ]
        out["pairs"][p] = {"vaes": [a, b], "runs": runs, "holds": holds(runs, p == CONTROL)}
    held = [p for p in pairs if p != CONTROL and out["pairs"][p]["holds"]]
    out["shown"] = held[0] if held else CONTROL
    return out
