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
    <out>/vaes/<name>/stages_s<i>.json  the stages of probe seed i >= 1
    <out>/jobs/<digest>/                which jobs are done (and being done) for this configuration
    <out>/report/                       results.json, results.csv, results.md, scatter PNGs

A stage is redone only when the settings it depends on changed (its ``key``); finished stages of
an interrupted run are read back, and the probe's own checkpoints resume a half-trained probe.

The study is a list of jobs (:func:`study_jobs`: the real images, each VAE, each VAE's probe
seeds), which the ranks of ``torchrun`` or the tasks of a SLURM array split among themselves
(:mod:`~ifid_callback.probes.shard`); whichever process finds every job done merges the rows
from the cache and writes the report. One process alone runs every job.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .gfid import resolve_study_feature
from .real_stage import real_stage
from .shard import Job, JobBoard, Shard, config_digest, resolve_shard, run_jobs
from .stages import write_json
from .study_config import StudyConfig, vae_name
from .study_vae import load_study_vae, run_vae

__all__ = ["StudyConfig", "load_study", "load_study_vae", "run_study", "study_jobs", "vae_name"]

_STUDY_FORMAT = 1


def study_jobs(
    config: StudyConfig,
    feature: Callable[[], nn.Module],
    *,
    progress: bool = True,
    stats_cache: Any = None,
    needs: dict[str, tuple[str, ...]] | None = None,
) -> list[Job]:
    """The study as jobs in dependency order (:mod:`~ifid_callback.probes.shard`): ``real`` (the
    shared real-image stage), ``vae/<name>`` per VAE (latents, rFID, iFID, PSNR, ablations;
    needs ``real`` and ``needs[name]``), then ``probe/<name>/<i>`` per VAE and probe seed (its
    training, gFID, gFID(t), IRS; needs ``vae/<name>``). ``feature()`` gives the extractor."""
    out = Path(config.out_dir)
    events = out / "events.jsonl"
    needs = needs or {}
    pairs = list(zip(config.vaes, config.resolved_names(), strict=True))

    def real() -> None:
        real_stage(config, feature(), out, events, progress, stats_cache)

    def vae(spec: str, name: str, probes: list[int]) -> Callable[[], None]:
        return lambda: run_vae(config, spec, name, feature(), out, events, progress, probes)

    jobs = [Job("real", real)]
    jobs += [Job(f"vae/{n}", vae(s, n, []), ("real", *needs.get(n, ()))) for s, n in pairs]
    for index in range(max(config.seeds_of(n) for _, n in pairs)):
        jobs += [
            Job(f"probe/{n}/{index}", vae(s, n, [index]), (f"vae/{n}",))
            for s, n in pairs
            if index < config.seeds_of(n)
        ]
    return jobs


def run_study(
    config: StudyConfig,
    *,
    feature: nn.Module | None = None,
    progress: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = print,
    stats_cache: Any = None,
    shard: Shard | None = None,
    prior_jobs: Sequence[Job] = (),
    needs: dict[str, tuple[str, ...]] | None = None,
    board: dict[str, Any] | None = None,
    extend: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any] | None:
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
        shard: this process's share of the jobs (default: from torchrun's environment, else
            all of them): :mod:`~ifid_callback.probes.shard`.
        prior_jobs: jobs that come first (e.g. training the VAEs), and ``needs``: per VAE name,
            the names of those its ``vae/<name>`` job needs.
        board: :class:`~ifid_callback.probes.shard.JobBoard` options (``poll``,
            ``stale_after``, ``heartbeat``).
        extend: called with the merged result before ``results_raw.json`` and the report are
            written (to add fields to both).

    Returns:
        ``{"config", "real", "vaes": [per-VAE results], "report": paths or None}``; None in a
        shard that finished its jobs while others still run theirs (the shard that finishes
        last merges and reports).
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard = shard if shard is not None else resolve_shard()
    write_json(out / "study.json", {"format": _STUDY_FORMAT, "config": config.to_dict()})
    say = log or (lambda _msg: None)
    resolved: list[nn.Module] = []

    def feat() -> nn.Module:
        if not resolved:
            found = resolve_study_feature(feature if feature is not None else config.feature)
            resolved.append(found.to(config.device))
        return resolved[0]

    own = study_jobs(config, feat, progress=progress, stats_cache=stats_cache, needs=needs)
    jobs = [*prior_jobs, *own]
    folder = out / "jobs" / config_digest(config.to_dict(), [(j.name, j.key) for j in jobs])
    started = time.time()

    def finish() -> dict[str, Any]:
        result = _merge(config, feat(), out, progress, say, stats_cache, started)
        if extend is not None:
            extend(result)
        write_json(out / "results_raw.json", result)
        if report:
            from .report import write_report

            paths = write_report(result, out / "report")
            result["report"] = {k: str(v) for k, v in paths.items()}
        return result

    done, result = run_jobs(jobs, JobBoard(folder, shard, **(board or {})), finish=finish, log=say)
    return result if done else None


def _merge(
    config: StudyConfig,
    feat: nn.Module,
    out: Path,
    progress: bool,
    say: Callable[[str], Any],
    stats_cache: Any,
    started: float,
) -> dict[str, Any]:
    """Every job done: the study's result, read back from the cached stages."""
    events = out / "events.jsonl"
    real = real_stage(config, feat, out, events, progress, stats_cache)
    say(f"real images: gFID floor {real['gfid_floor']:.2f} (n={real['gfid_floor_n']})")
    rows = []
    for spec, name in zip(config.vaes, config.resolved_names(), strict=True):
        row = run_vae(config, spec, name, feat, out, events, progress)
        assert row is not None
        rows.append(row)
        t_se = row.get("gfid_t_se") or {}
        ts = " ".join(
            f"{t}:{v:.1f}" + (f"±{t_se[t]:.1f}" if t in t_se else "")
            for t, v in row["gfid_t"].items()
        )
        spread = row.get("gfid_seed_std")
        noise = f" ± {row['gfid_se']:.2f}" + ("" if spread is None else f" (seed sd {spread:.2f})")
        say(
            f"{name}: rFID {row['rfid']:.2f} iFID {row['ifid']:.2f} PSNR {row['psnr']:.2f} "
            f"gFID {row['gfid']:.2f}{noise} gFID(t) {ts} IRS {row['irs']['irs']:.3f} "
            f"[{time.time() - started:.0f}s]"
        )
    return {"config": config.to_dict(), "real": real, "vaes": rows, "report": None}


def load_study(out_dir: str | os.PathLike) -> StudyConfig:
    """The :class:`StudyConfig` saved in a study directory."""
    data = json.loads((Path(out_dir) / "study.json").read_text())
    return StudyConfig.from_dict(data["config"])
