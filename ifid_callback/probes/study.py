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

This module runs the study (:func:`run_study`) from its parts: the settings
(:mod:`~ifid_callback.probes.study_config`), the stage cache and arrays on disk
(:mod:`~ifid_callback.probes.stages`), the datasets (:mod:`~ifid_callback.probes.study_data`),
the shared real-image stage (:mod:`~ifid_callback.probes.real_stage`), and per VAE
(:mod:`~ifid_callback.probes.study_vae`) its iFID ablations (:mod:`~ifid_callback.probes.ablation`)
and its probes, one per seed (:mod:`~ifid_callback.probes.probe_seed`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .gfid import resolve_study_feature
from .real_stage import real_stage
from .stages import write_json
from .study_config import StudyConfig, vae_name
from .study_vae import load_study_vae, run_vae

__all__ = ["StudyConfig", "load_study", "load_study_vae", "run_study", "vae_name"]

_STUDY_FORMAT = 1


def run_study(
    config: StudyConfig,
    *,
    feature: nn.Module | None = None,
    progress: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = print,
    stats_cache: Any = None,
) -> dict[str, Any]:
    """Run (or resume) a study and write its report.

    Args:
        config: the :class:`StudyConfig`.
        feature: an extractor to use instead of resolving ``config.feature`` (which still names
            it in the cache keys).
        progress: tqdm progress bars.
        report: write ``<out>/report`` (see :mod:`ifid_callback.probes.report`) at the end.
        log: where one-line progress messages go (None: silent).
        stats_cache: where the real images' features are cached across studies (a directory,
            a ``StatsCache``, True for the per-user default, None: only in ``<out>/real``).

    Returns:
        ``{"config", "real", "vaes": [per-VAE results], "report": paths or None}``.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", {"format": _STUDY_FORMAT, "config": config.to_dict()})
    events = out / "events.jsonl"
    say = log or (lambda _msg: None)
    feat = resolve_study_feature(feature if feature is not None else config.feature)
    feat = feat.to(config.device)
    started = time.time()
    real = real_stage(config, feat, out, events, progress, stats_cache)
    say(f"real images: gFID floor {real['gfid_floor']:.2f} (n={real['gfid_floor_n']})")
    rows = []
    for spec, name in zip(config.vaes, config.resolved_names(), strict=True):
        row = run_vae(config, spec, name, feat, out, events, progress)
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
    write_json(out / "results_raw.json", result)
    if report:
        from .report import write_report

        result["report"] = {k: str(v) for k, v in write_report(result, out / "report").items()}
    return result


def load_study(out_dir: str | os.PathLike) -> StudyConfig:
    """The :class:`StudyConfig` saved in a study directory."""
    data = json.loads((Path(out_dir) / "study.json").read_text())
    return StudyConfig.from_dict(data["config"])
