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

#: The pairs of the check, named; the first VAE is the one iFID is expected to prefer.
PAIRS: dict[str, tuple[str, str]] = {
    "noise-vs-align1": ("kl1e-3-noise0.3", "kl1e-3-align1"),
    "noise-vs-align0.1": ("kl1e-3-noise0.3", "kl1e-3-align0.1"),
    "control": ("ae", "ae-shuffle-b2"),
}
#: Natural candidates in the order fixed before the check ran; the demo shows the first that held.
CANDIDATES: tuple[str, ...] = ("noise-vs-align1", "noise-vs-align0.1")
#: The positive control, shown when no natural candidate holds (rFID equal by construction).
CONTROL = "control"
#: What each VAE of the pairs is, in words (the demo prints it).
DESCRIPTIONS: dict[str, str] = {
    "kl1e-3-noise0.3": "KL 1e-3 and latent-noise augmentation (std 0.3 of the latent's own)",
    "kl1e-3-align1": "KL 1e-3 and a VA-VAE-style alignment of the latent to a digit "
    "classifier's feature maps (weight 1)",
    "kl1e-3-align0.1": "KL 1e-3 and a VA-VAE-style alignment of the latent to a digit "
    "classifier's feature maps (weight 0.1)",
    "ae": "a plain autoencoder (reconstruction loss only)",
    "ae-shuffle-b2": "the same autoencoder with an invertible local shuffle of latent values "
    "after its encoder, undone before its decoder: identical reconstructions",
}

_FIGURES = ("rfid", "ifid", "gfid")


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
        ``{"vae", "seed", "rfid", "rfid_std", "ifid", "ifid_std", "psnr", "gfid",
        "gfid_heldout", "probe_loss", "seconds"}``; FIDs in the digit classifier's feature
        space, standard errors by the infinitesimal jackknife over the 397 held-out queries,
        PSNR in dB.
    """
    from ..bank import LatentBank
    from ..data import EmbeddedDigits
    from ..metric import InterpolatedFID
    from ..vae import VAEAdapter
    from .fid import fid_from_features
    from .gfid import generated_features
    from .train import ProbeTrainConfig, train_probe
    from .zoo import load_vae_checkpoint

    cache = Path(settings.out) / f"seed{seed}" / f"{name}.json"
    info = getattr(feature, "info", {}) or {}
    key = {
        "vae": name,
        "seed": seed,
        "recipe": _recipe_key(settings),
        "feature": info.get("key", type(feature).__name__),
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
    tail = [v for _, v in probe.loss_history[-5:]]
    result = {
        "vae": name,
        "seed": seed,
        "rfid": scores["rfid"],
        "rfid_std": scores["rfid_std"],
        "ifid": scores["ifid"],
        "ifid_std": scores["ifid_std"],
        "psnr": scores["psnr"],
        "gfid": fid_from_features(samples, real_train),
        "gfid_heldout": fid_from_features(samples, real_held_out),
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


def _prefers(a: dict[str, Any], b: dict[str, Any], key: str) -> str | None:
    # Equal up to float rounding is a tie: an invertible latent map leaves reconstructions, and
    # so rFID, the same by construction (relative spread ~1e-7).
    if math.isclose(a[key], b[key], rel_tol=1e-5):
        return None
    return a["vae"] if a[key] < b[key] else b["vae"]


def verdict(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Which VAE each metric prefers (lower is better) and whom the probe sided with.

    Returns ``{"rfid_prefers", "ifid_prefers", "gfid_prefers", "gfid_heldout_prefers"}`` (a VAE
    name, or None for an exact tie, as rFID under an invertible map), ``"disagree"`` (rFID and
    iFID prefer different VAEs) and ``"probe_sides_with"`` (``"iFID"``, ``"rFID"`` or None when
    they agree or tie), and the gaps ``b - a`` of each figure in units of their standard error
    where one is known.
    """
    out: dict[str, Any] = {f"{k}_prefers": _prefers(a, b, k) for k in (*_FIGURES, "gfid_heldout")}
    r, i, g = out["rfid_prefers"], out["ifid_prefers"], out["gfid_prefers"]
    out["disagree"] = r is not None and i is not None and r != i
    out["probe_sides_with"] = None
    if out["disagree"]:
        out["probe_sides_with"] = "iFID" if g == i else "rFID"
    for key in ("rfid", "ifid"):
        se = math.hypot(a[f"{key}_std"], b[f"{key}_std"])
        out[f"{key}_gap_se"] = (b[key] - a[key]) / se if se > 0 else math.nan
    return out


def holds(runs: Sequence[dict[str, Any]], control: bool = False) -> bool:
    """The check's criterion over seeds: a natural pair holds if in every run rFID and iFID
    disagree and gFID sides with iFID; the control holds if iFID and gFID agree in every run."""
    if not runs:
        return False
    for run in runs:
        v = run["verdict"]
        if control:
            if v["ifid_prefers"] is None or v["ifid_prefers"] != v["gfid_prefers"]:
                return False
        elif not (v["disagree"] and v["probe_sides_with"] == "iFID"):
            return False
    return True


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


def summarize_check(check: dict[str, Any], pair: str) -> dict[str, Any]:
    """Per VAE of ``pair``: mean and standard deviation (ddof 1) over the check's seeds of
    rFID, iFID, gFID and gFID held-out, and how many seeds showed the pair's outcome."""
    entry = check["pairs"][pair]
    per_vae = {}
    for i, name in enumerate(entry["vaes"]):
        rows = [run["vaes"][i] for run in entry["runs"]]
        stats = {}
        for key in (*_FIGURES, "gfid_heldout", "psnr"):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            stats[key] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
            }
        per_vae[name] = stats
    runs = entry["runs"]
    return {
        "pair": pair,
        "seeds": len(runs),
        "disagree": sum(r["verdict"]["disagree"] for r in runs),
        "sided_with_ifid": sum(r["verdict"]["probe_sides_with"] == "iFID" for r in runs),
        "ifid_matches_gfid": sum(
            r["verdict"]["ifid_prefers"] == r["verdict"]["gfid_prefers"] for r in runs
        ),
        "rfid_matches_gfid": sum(
            r["verdict"]["rfid_prefers"] == r["verdict"]["gfid_prefers"] for r in runs
        ),
        "holds": entry["holds"],
        "vaes": per_vae,
    }


def format_pair(result: dict[str, Any], spread: dict[str, Any] | None = None) -> str:
    """The demo's table for one run of a pair, and its verdict in words.

    ``spread`` (from :func:`summarize_check`) adds each figure's standard deviation over the
    committed check's seeds: the noise of re-running everything with another seed.
    """

    def pm(value: float, err: float) -> str:
        return f"{value:.2f} +- {err:.2f}" if math.isfinite(err) else f"{value:.2f}"

    def row(name: str, cells: Sequence[str]) -> str:
        widths = (15, 15, 7, 12, 13)
        return f"{name:<18}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths))

    lines = [
        row("VAE", ("rFID +- SE", "iFID +- SE", "PSNR dB", "gFID (probe)", "gFID held-out")),
        row("-" * 18, ["-" * w for w in (15, 15, 7, 12, 13)]),
    ]
    for r in result["vaes"]:
        lines.append(
            row(
                r["vae"],
                (
                    pm(r["rfid"], r["rfid_std"]),
                    pm(r["ifid"], r["ifid_std"]),
                    f"{r['psnr']:.2f}",
                    f"{r['gfid']:.2f}",
                    f"{r['gfid_heldout']:.2f}",
                ),
            )
        )
    if spread is not None:
        lines.append(
            f"std over the {spread['seeds']} seeds of the committed check (the noise of "
            "re-running everything with another seed):"
        )
        for name, stats in spread["vaes"].items():
            keys = ("rfid", "ifid", "psnr", "gfid", "gfid_heldout")
            lines.append(row(name, [f"{stats[k]['std']:.2f}" for k in keys]))
    a, b = result["vaes"]
    v = result["verdict"]
    lines.append("")
    lines.append(_sentence("rFID", v["rfid_prefers"], a, b, "rfid"))
    lines.append(_sentence("iFID", v["ifid_prefers"], a, b, "ifid"))
    lines.append(_sentence("gFID", v["gfid_prefers"], a, b, "gfid"))
    if v["disagree"]:
        lines.append(
            f"rFID and iFID disagree; the diffusion probe sides with {v['probe_sides_with']}."
        )
    elif v["rfid_prefers"] is None:
        agree = v["ifid_prefers"] == v["gfid_prefers"]
        lines.append(
            "rFID cannot tell them apart; the diffusion probe "
            + ("agrees with iFID." if agree else "disagrees with iFID.")
        )
    else:
        lines.append("In this run rFID and iFID prefer the same VAE.")
    return "\n".join(lines)


def _sentence(label: str, preferred: str | None, a: dict, b: dict, key: str) -> str:
    if preferred is None:
        return f"{label}: a tie ({a[key]:.2f} and {b[key]:.2f})."
    best, other = (a, b) if preferred == a["vae"] else (b, a)
    return f"{label} prefers {best['vae']} ({best[key]:.2f} vs {other[key]:.2f})."


def outcome_sentence(summary: dict[str, Any]) -> str:
    """``"holds: ..."`` or ``"fails: ..."``: the criterion on a pair over the check's seeds, with
    its counts (``summary`` from :func:`summarize_check`)."""
    n, verdict_word = summary["seeds"], "holds" if summary["holds"] else "fails"
    tail = (
        f"gFID prefers the VAE that iFID prefers in {summary['ifid_matches_gfid']}/{n} seeds and "
        f"the one that rFID prefers in {summary['rfid_matches_gfid']}/{n} (a tie counts for "
        "neither)"
    )
    if summary["pair"] == CONTROL:
        return f"{verdict_word} (rFID equal by construction): {tail}."
    return (
        f"{verdict_word}: rFID and iFID disagree in {summary['disagree']}/{n} seeds, and gFID "
        f"sides with iFID in {summary['sided_with_ifid']} of them; {tail}."
    )


def format_check(check: dict[str, Any]) -> str:
    """The check as markdown: per pair, a row per seed and VAE, the per-VAE mean +- std over
    seeds, and whether the criterion held."""
    lines = [
        f"Seeds: {', '.join(str(s) for s in check['seeds'])}. Shown by the demo: "
        f"**{check['shown']}**.",
        "",
    ]
    for pair, entry in check["pairs"].items():
        a, b = entry["vaes"]
        summary = summarize_check(check, pair)
        kind = "positive control" if pair == CONTROL else "natural candidate"
        lines += [f"### `{pair}`: `{a}` vs `{b}` ({kind})", ""]
        lines += [f"Criterion {outcome_sentence(summary)}", ""]
        lines += [
            "| seed | VAE | rFID +- SE | iFID +- SE | PSNR dB | gFID | gFID held-out | "
            "probe prefers |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in entry["runs"]:
            v = run["verdict"]
            side = v["probe_sides_with"] or ("(no disagreement)" if not v["disagree"] else "")
            for r in run["vaes"]:
                lines.append(
                    f"| {run['seed']} | `{r['vae']}` | {r['rfid']:.2f} +- {r['rfid_std']:.2f} | "
                    f"{r['ifid']:.2f} +- {r['ifid_std']:.2f} | {r['psnr']:.2f} | "
                    f"{r['gfid']:.2f} | {r['gfid_heldout']:.2f} | "
                    f"{side if r is run['vaes'][0] else ''} |"
                )
        lines += [
            "",
            "| VAE | rFID | iFID | PSNR dB | gFID | gFID held-out |",
            "|---|---|---|---|---|---|",
        ]
        for name, stats in summary["vaes"].items():
            cells = " | ".join(
                f"{stats[k]['mean']:.2f} +- {stats[k]['std']:.2f}"
                for k in ("rfid", "ifid", "psnr", "gfid", "gfid_heldout")
            )
            lines.append(f"| `{name}` (mean +- std over seeds) | {cells} |")
        lines.append("")
    return "\n".join(lines)


def write_check(check: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.md`` (:func:`format_check`) and ``results.json`` (the check, with each
    pair's :func:`summarize_check`) into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**check, "summaries": {p: summarize_check(check, p) for p in check["pairs"]}}
    paths = {
        "markdown": out / "results.md",
        "json": out / "results.json",
        "summary": out / "summary.json",
    }
    paths["markdown"].write_text(format_check(check) + "\n")
    paths["json"].write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    paths["summary"].write_text(json.dumps(demo_summary(check), indent=2, sort_keys=True) + "\n")
    return paths


def demo_summary(check: dict[str, Any]) -> dict[str, Any]:
    """What the demo needs of a check: the pair it shows, whether each pair held, the recipe and
    feature network it ran with, and the shown pair's :func:`summarize_check`."""
    return {
        "seeds": list(check["seeds"]),
        "shown": check["shown"],
        "holds": {p: entry["holds"] for p, entry in check["pairs"].items()},
        "recipe": check["recipe"],
        "feature_key": check["feature_network"].get("key"),
        "summary": summarize_check(check, check["shown"]),
        "counts": {
            p: {k: v for k, v in summarize_check(check, p).items() if k != "vaes"}
            for p in check["pairs"]
        },
    }
